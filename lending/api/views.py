from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, AmountInput, ApiView, paginated
from common.idempotency import idempotent
from common.money import fmt
from lending import selectors, services
from lending.models import Loan, LoanOffer, LoanRequest


class ScheduleRowOut(serializers.Serializer[Any]):
    n = serializers.IntegerField()
    due_at = serializers.DateTimeField()
    principal = serializers.CharField()
    interest = serializers.CharField()
    total = serializers.CharField()
    status = serializers.CharField(required=False)


def _schedule_preview(r: LoanRequest) -> list[dict[str, Any]]:
    p = r.asset.precision
    rows = services.loan_schedule(
        principal=r.amount, annual_rate=r.annual_rate, term_months=r.term_months, plan=r.plan,
        precision=p, start=timezone.now(),
    )  # fmt: skip
    return [
        {"n": x.n, "due_at": x.due_at, "principal": fmt(x.principal, p),
         "interest": fmt(x.interest, p), "total": fmt(x.total, p)}
        for x in rows
    ]  # fmt: skip


class LoanRequestOut(serializers.Serializer[LoanRequest]):
    id = serializers.IntegerField()
    borrower = serializers.CharField(source="borrower.username")
    asset = serializers.CharField(source="asset.code")
    amount = serializers.SerializerMethodField()
    funded = serializers.SerializerMethodField()
    annual_rate = serializers.CharField()
    term_months = serializers.IntegerField()
    plan = serializers.CharField()
    collateral_asset = serializers.CharField(source="collateral_asset.code")
    collateral_amount = serializers.SerializerMethodField()
    funding_deadline = serializers.DateTimeField()
    allow_partial = serializers.BooleanField()
    min_fill = serializers.SerializerMethodField()
    state = serializers.CharField()
    schedule = serializers.SerializerMethodField()

    def _a(self, obj: LoanRequest, value: Any) -> str | None:
        return None if value is None else fmt(value, obj.asset.precision)

    def get_amount(self, obj: LoanRequest) -> str | None:
        return self._a(obj, obj.amount)

    def get_funded(self, obj: LoanRequest) -> str | None:
        return self._a(obj, obj.funded)

    def get_min_fill(self, obj: LoanRequest) -> str | None:
        return self._a(obj, obj.min_fill)

    def get_collateral_amount(self, obj: LoanRequest) -> str:
        return fmt(obj.collateral_amount, obj.collateral_asset.precision)

    def get_schedule(self, obj: LoanRequest) -> list[dict[str, Any]] | None:
        # The full preview on the detail page; lists stay light.
        return _schedule_preview(obj) if self.context.get("detail") else None


class LoanOut(serializers.Serializer[Loan]):
    id = serializers.IntegerField(source="pk")
    borrower = serializers.CharField(source="borrower.username")
    asset = serializers.CharField(source="asset.code")
    principal = serializers.SerializerMethodField()
    collateral_asset = serializers.CharField(source="collateral_asset.code")
    collateral_amount = serializers.SerializerMethodField()
    annual_rate = serializers.CharField()
    plan = serializers.CharField()
    state = serializers.CharField()
    activated_at = serializers.DateTimeField()
    late_since = serializers.DateTimeField(allow_null=True)
    margin_called = serializers.BooleanField()
    shortfall = serializers.SerializerMethodField()
    ltv = serializers.SerializerMethodField()
    schedule = serializers.SerializerMethodField()

    def get_principal(self, obj: Loan) -> str:
        return fmt(obj.principal, obj.asset.precision)

    def get_shortfall(self, obj: Loan) -> str:
        return fmt(obj.shortfall, obj.asset.precision)

    def get_collateral_amount(self, obj: Loan) -> str:
        return fmt(obj.collateral_amount, obj.collateral_asset.precision)

    def get_ltv(self, obj: Loan) -> str | None:
        if not self.context.get("detail"):
            return None
        ltv = selectors.loan_ltv(obj)
        return None if ltv is None else f"{ltv:.4f}"

    def get_schedule(self, obj: Loan) -> list[dict[str, Any]] | None:
        if not self.context.get("detail"):
            return None
        p = obj.asset.precision
        return [
            {"n": i.n, "due_at": i.due_at, "principal": fmt(i.principal, p),
             "interest": fmt(i.interest, p), "total": fmt(i.total, p), "status": i.status}
            for i in obj.installments.order_by("n")
        ]  # fmt: skip


def _request_out(request: Request, request_id: int, code: int = 200) -> Response:
    obj = selectors.loan_request_get(request_id=request_id)
    data = LoanRequestOut(obj, context={"request": request, "detail": True}).data
    return Response(data, status=code)


def _loan_out(request: Request, loan_id: int) -> Response:
    obj = selectors.loan_get_for_user(loan_id=loan_id, user=request.user)
    return Response(LoanOut(obj, context={"request": request, "detail": True}).data)


class LoanRequestListApi(ApiView):
    class LoanRequestInput(serializers.Serializer[dict[str, Any]]):
        asset = serializers.CharField(max_length=12)
        amount = AmountInput(max_length=64)
        annual_rate = AmountInput(
            max_length=64, help_text=gettext_lazy('Percent per year, e.g. "5".')
        )
        term_months = serializers.IntegerField()
        plan = serializers.CharField(max_length=10, default="amortized")
        collateral_asset = serializers.CharField(max_length=12)
        collateral_amount = AmountInput(max_length=64)
        funding_deadline = serializers.DateTimeField()
        allow_partial = serializers.BooleanField(default=False)
        min_fill = AmountInput(max_length=64, required=False, allow_null=True, default=None)

    @extend_schema(
        operation_id="loan_requests_list", responses={200: paginated(LoanRequestOut), **ERRORS}
    )
    def get(self, request: Request) -> Response:
        qs = selectors.loan_request_list().filter(state=request.query_params.get("state", "open"))
        return self.paginate(qs, LoanRequestOut)

    @extend_schema(
        operation_id="loan_requests_create",
        request=LoanRequestInput,
        responses={201: LoanRequestOut, **ERRORS},
        description="The collateral is held from the borrower's wallet now and must meet "
        "LENDING_INITIAL_LTV at today's price index; the answer carries the full schedule.",
        examples=[
            OpenApiExample(
                "1 ETH at 5% over six months against USDT",
                value={"asset": "ETH", "amount": "1", "annual_rate": "5", "term_months": 6,
                       "plan": "amortized", "collateral_asset": "USDT",
                       "collateral_amount": "6000", "funding_deadline": "2026-12-11T12:00:00Z",
                       "allow_partial": True, "min_fill": "0.5"},
                request_only=True,
            ),
        ],
    )  # fmt: skip
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.LoanRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.loan_request_create(borrower=request.user, **data.validated_data)
        return _request_out(request, created.pk, status.HTTP_201_CREATED)


class LoanRequestDetailApi(ApiView):
    @extend_schema(operation_id="loan_requests_detail", responses={200: LoanRequestOut, **ERRORS})
    def get(self, request: Request, request_id: int) -> Response:
        return _request_out(request, request_id)


class LoanRequestFundApi(ApiView):
    class LoanFundInput(serializers.Serializer[dict[str, Any]]):
        amount = AmountInput(max_length=64)

    @extend_schema(
        operation_id="loan_requests_fund",
        request=LoanFundInput,
        responses={200: LoanRequestOut, **ERRORS},
        description="Held from the lender's wallet; the request activates when fully funded. "
        "Funding your own request or more than is left is a 400 naming `amount`.",
        examples=[OpenApiExample("Fund part of it", value={"amount": "0.3"}, request_only=True)],
    )
    @idempotent
    def post(self, request: Request, request_id: int) -> Response:
        data = self.LoanFundInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.loan_request_fund(
            request_id=request_id, lender=request.user, amount=data.validated_data["amount"]
        )
        return _request_out(request, request_id)


class LoanRequestCancelApi(ApiView):
    @extend_schema(operation_id="loan_requests_cancel", request=None,
                   responses={200: LoanRequestOut, **ERRORS})  # fmt: skip
    @idempotent
    def post(self, request: Request, request_id: int) -> Response:
        services.loan_request_cancel(request_id=request_id, actor=request.user)
        return _request_out(request, request_id)


class LoanListApi(ApiView):
    ordering = "-request_id"

    @extend_schema(operation_id="loans_list", responses={200: paginated(LoanOut), **ERRORS})
    def get(self, request: Request) -> Response:
        return self.paginate(selectors.loan_list_for_user(user=request.user), LoanOut)


class LoanDetailApi(ApiView):
    @extend_schema(operation_id="loans_detail", responses={200: LoanOut, **ERRORS})
    def get(self, request: Request, loan_id: int) -> Response:
        return _loan_out(request, loan_id)


class LoanRepayApi(ApiView):
    @extend_schema(operation_id="loans_repay", request=None, responses={200: LoanOut, **ERRORS})
    @idempotent
    def post(self, request: Request, loan_id: int) -> Response:
        services.loan_repay_early(loan_id=loan_id, actor=request.user)
        return _loan_out(request, loan_id)


class LoanCollateralApi(ApiView):
    class LoanCollateralInput(serializers.Serializer[dict[str, Any]]):
        amount = AmountInput(max_length=64)

    @extend_schema(
        operation_id="loans_add_collateral",
        request=LoanCollateralInput,
        responses={200: LoanOut, **ERRORS},
        examples=[
            OpenApiExample("Answer a margin call", value={"amount": "500"}, request_only=True)
        ],
    )
    @idempotent
    def post(self, request: Request, loan_id: int) -> Response:
        data = self.LoanCollateralInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.loan_add_collateral(
            loan_id=loan_id, actor=request.user, amount=data.validated_data["amount"]
        )
        return _loan_out(request, loan_id)


class LoanOfferCollateralOut(serializers.Serializer[Any]):
    asset = serializers.CharField(source="asset.code")
    max_ltv = serializers.CharField()


class LoanOfferOut(serializers.Serializer[LoanOffer]):
    id = serializers.IntegerField()
    lender = serializers.CharField(source="lender.username")
    asset = serializers.CharField(source="asset.code")
    amount = serializers.SerializerMethodField()
    available = serializers.SerializerMethodField()
    annual_rate = serializers.CharField()
    term_min = serializers.IntegerField()
    term_max = serializers.IntegerField()
    collateral = LoanOfferCollateralOut(source="collaterals.all", many=True)
    state = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_amount(self, obj: LoanOffer) -> str:
        return fmt(obj.amount, obj.asset.precision)

    def get_available(self, obj: LoanOffer) -> str:
        return fmt(obj.available, obj.asset.precision)


def _offer_out(request: Request, offer_id: int, code: int = 200) -> Response:
    obj = selectors.loan_offer_get(offer_id=offer_id)
    return Response(LoanOfferOut(obj, context={"request": request}).data, status=code)


class LoanOfferListApi(ApiView):
    class LoanOfferInput(serializers.Serializer[dict[str, Any]]):
        asset = serializers.CharField(max_length=12)
        amount = AmountInput(max_length=64)
        annual_rate = AmountInput(
            max_length=64, help_text=gettext_lazy('Percent per year, e.g. "5".')
        )
        term_min = serializers.IntegerField()
        term_max = serializers.IntegerField()
        collateral = serializers.ListField(
            child=serializers.DictField(), max_length=20,
            help_text=gettext_lazy('Accepted collateral: [{"asset": "USDT", "max_ltv": "0.5"}] (LTV as a '
            "string fraction)."),
        )  # fmt: skip

    @extend_schema(
        operation_id="loan_offers_list",
        parameters=[
            OpenApiParameter("asset", str, description="The asset lent, e.g. ETH."),
            OpenApiParameter("min_rate", str, description="Annual rate at least (percent)."),
            OpenApiParameter("max_rate", str, description="Annual rate at most (percent)."),
            OpenApiParameter("state", str, description="open (default), taken or cancelled."),
        ],
        responses={200: paginated(LoanOfferOut), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        q = request.query_params
        qs = selectors.loan_offer_list(
            state=q.get("state", "open"), asset=q.get("asset"), min_rate=q.get("min_rate"),
            max_rate=q.get("max_rate"),
        )  # fmt: skip
        return self.paginate(qs, LoanOfferOut)

    @extend_schema(
        operation_id="loan_offers_create",
        request=LoanOfferInput,
        responses={201: LoanOfferOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Lend 2 ETH for 3 to 12 months",
                value={"asset": "ETH", "amount": "2", "annual_rate": "6", "term_min": 3,
                       "term_max": 12, "collateral": [{"asset": "USDT", "max_ltv": "0.6"}]},
                request_only=True,
            ),
        ],
    )  # fmt: skip
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.LoanOfferInput(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.loan_offer_create(lender=request.user, **data.validated_data)
        return _offer_out(request, created.pk, status.HTTP_201_CREATED)


class LoanOfferDetailApi(ApiView):
    @extend_schema(operation_id="loan_offers_detail", responses={200: LoanOfferOut, **ERRORS})
    def get(self, request: Request, offer_id: int) -> Response:
        return _offer_out(request, offer_id)


class LoanOfferTakeApi(ApiView):
    class LoanOfferTakeInput(serializers.Serializer[dict[str, Any]]):
        amount = AmountInput(max_length=64)
        term_months = serializers.IntegerField()
        plan = serializers.CharField(max_length=10, default="amortized")
        collateral_asset = serializers.CharField(max_length=12)
        collateral_amount = AmountInput(max_length=64)

    @extend_schema(
        operation_id="loan_offers_take",
        request=LoanOfferTakeInput,
        responses={201: LoanOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Borrow 0.5 ETH of it for six months",
                value={"amount": "0.5", "term_months": 6, "plan": "amortized",
                       "collateral_asset": "USDT", "collateral_amount": "3000"},
                request_only=True,
            ),
        ],
    )  # fmt: skip
    @idempotent
    def post(self, request: Request, offer_id: int) -> Response:
        data = self.LoanOfferTakeInput(data=request.data)
        data.is_valid(raise_exception=True)
        loan = services.loan_offer_take(
            offer_id=offer_id, borrower=request.user, **data.validated_data
        )
        obj = selectors.loan_get_for_user(loan_id=loan.pk, user=request.user)
        return Response(
            LoanOut(obj, context={"request": request, "detail": True}).data,
            status=status.HTTP_201_CREATED,
        )


class LoanOfferCancelApi(ApiView):
    @extend_schema(operation_id="loan_offers_cancel", request=None,
                   responses={200: LoanOfferOut, **ERRORS})  # fmt: skip
    @idempotent
    def post(self, request: Request, offer_id: int) -> Response:
        services.loan_offer_cancel(offer_id=offer_id, actor=request.user)
        return _offer_out(request, offer_id)


# --- disputes ------------------------------------------------------------------------------


class LoanDisputeStatementOut(serializers.Serializer[Any]):
    author = serializers.CharField(source="author.username")
    role = serializers.CharField()
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class LoanDisputeOut(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    loan = serializers.IntegerField(source="loan_id")
    opened_by = serializers.CharField(source="opened_by.username")
    opener_role = serializers.CharField()
    category = serializers.CharField()
    text = serializers.CharField()
    status = serializers.CharField()
    outcome = serializers.CharField()
    decision_reason = serializers.CharField()
    compensation = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    statements = LoanDisputeStatementOut(many=True)

    def get_compensation(self, obj: Any) -> dict[str, Any] | None:
        if obj.compensation_amount is None:
            return None
        asset = obj.compensation_asset
        return {
            "asset": asset.code,
            "amount": fmt(obj.compensation_amount, asset.precision),
            "payer": obj.payer_id,
            "payee": obj.payee_id,
        }


def _dispute_out(request: Request, dispute_id: int, code: int = 200) -> Response:
    obj = selectors.loan_dispute_get_for_user(dispute_id=dispute_id, user=request.user)
    return Response(LoanDisputeOut(obj).data, status=code)


class LoanDisputeListApi(ApiView):
    class LoanDisputeInput(serializers.Serializer[dict[str, Any]]):
        category = serializers.CharField(
            max_length=12,
            help_text=gettext_lazy("liquidation, installment, collateral, conduct or other."),
        )
        text = serializers.CharField(
            max_length=4000, help_text=gettext_lazy("What happened (10+ characters).")
        )

    ordering = "-id"

    @extend_schema(operation_id="loan_disputes_list", responses={200: paginated(LoanDisputeOut),
                   **ERRORS})  # fmt: skip
    def get(self, request: Request, loan_id: int) -> Response:
        qs = selectors.loan_disputes_for_user(loan_id=loan_id, user=request.user)
        return self.paginate(qs, LoanDisputeOut)

    @extend_schema(
        operation_id="loan_disputes_open",
        request=LoanDisputeInput,
        responses={201: LoanDisputeOut, **ERRORS},
        description="A party (the borrower or a lender) disputes the loan; a moderator who is "
        "no party decides. One open dispute per loan (409 otherwise); up to "
        "LENDING_DISPUTE_DAYS after the loan closed.",
        examples=[
            OpenApiExample(
                "A liquidation at a wrong price",
                value={
                    "category": "liquidation",
                    "text": "The ETH index was 8% below every exchange when it liquidated.",
                },
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, loan_id: int) -> Response:
        data = self.LoanDisputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        dispute = services.loan_dispute_open(
            loan_id=loan_id, actor=request.user, **data.validated_data
        )
        return _dispute_out(request, dispute.pk, status.HTTP_201_CREATED)


class LoanDisputeDetailApi(ApiView):
    @extend_schema(operation_id="loan_disputes_detail", responses={200: LoanDisputeOut, **ERRORS})
    def get(self, request: Request, dispute_id: int) -> Response:
        return _dispute_out(request, dispute_id)


class LoanDisputeStatementApi(ApiView):
    class LoanDisputeStatementInput(serializers.Serializer[dict[str, Any]]):
        text = serializers.CharField(max_length=4000)

    @extend_schema(
        operation_id="loan_disputes_statement",
        request=LoanDisputeStatementInput,
        responses={201: LoanDisputeOut, **ERRORS},
        examples=[
            OpenApiExample(
                "The other side answers",
                value={"text": "The index matched Kraken's close at that minute."},
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, dispute_id: int) -> Response:
        data = self.LoanDisputeStatementInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.loan_dispute_statement(
            dispute_id=dispute_id, actor=request.user, text=data.validated_data["text"]
        )
        return _dispute_out(request, dispute_id, status.HTTP_201_CREATED)
