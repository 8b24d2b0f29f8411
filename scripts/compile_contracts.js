#!/usr/bin/env node
// Compiles contracts/*.sol with solc-js (npm's `solc`, pinned in package.json) into
// ledger/evm/artifacts/<Name>.json: {"contract", "compiler", "abi", "bytecode"}.
// Usage: node scripts/compile_contracts.js [--check]
//   --check  compile and compare with the committed artifacts; exit 1 if any differs.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const srcDir = path.join(root, "contracts");
const outDir = path.join(root, "ledger", "evm", "artifacts");
const check = process.argv.includes("--check");

const sources = {};
for (const file of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    // No metadata hash: the bytecode depends on the source only, so --check is exact.
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
let differs = false;
fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    const artifact =
      JSON.stringify(
        { contract: `${file}:${name}`, compiler: solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object },
        null,
        1,
      ) + "\n";
    const target = path.join(outDir, `${name}.json`);
    if (check) {
      const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
      if (current !== artifact) {
        console.error(`${path.relative(root, target)} differs from ${file} compiled`);
        differs = true;
      }
    } else {
      fs.writeFileSync(target, artifact);
      console.log(`${path.relative(root, target)} (${c.evm.bytecode.object.length / 2} bytes)`);
    }
  }
}
process.exit(differs ? 1 : 0);
