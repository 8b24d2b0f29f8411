"""Prices from outside: the exchanges' ticker adapters and the FX source (`sources`), the price
history's reads (`history`) and the book's chart (`chart`). The writes (polling, the median,
staleness) are marketplace.services.prices."""
