// Compiles contracts/SwarmCoordinator.sol with the pinned solcjs into OUT_DIR/SwarmCoordinator.abi.json
// and OUT_DIR/SwarmCoordinator.bin. Run through ledger/compile, which installs solc and sets SOLC_JS.
//
// The output depends on the source and these settings only: the metadata trailer (which would
// embed a hash of the source path and compiler details) is left out, and the EVM version is pinned
// rather than following the compiler's default.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const name = 'SwarmCoordinator'
const solcVersion = '0.8.37'

const [outDir] = process.argv.slice(2)
if (!outDir || !process.env.SOLC_JS) {
  console.error('usage: SOLC_JS=<solc module folder> node ledger/compile.mjs OUT_DIR (ledger/compile does this)')
  process.exit(2)
}
const solc = createRequire(import.meta.url)(process.env.SOLC_JS)
// The pragma pins the language version too, but a wrong module would fail there with a less
// helpful message.
if (!solc.version().startsWith(`${solcVersion}+`)) {
  console.error(`compile.mjs: expected solc ${solcVersion}, SOLC_JS has ${solc.version()}`)
  process.exit(1)
}

const here = dirname(fileURLToPath(import.meta.url))
const input = {
  language: 'Solidity',
  sources: { [`${name}.sol`]: { content: readFileSync(join(here, 'contracts', `${name}.sol`), 'utf8') } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    metadata: { appendCBOR: false, bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
}
const output = JSON.parse(solc.compile(JSON.stringify(input)))
const diagnostics = output.errors ?? []
for (const d of diagnostics) console.error(d.formattedMessage)
// Warnings fail the build too: the committed contract compiles clean.
if (diagnostics.length > 0) process.exit(1)

const contract = output.contracts[`${name}.sol`][name]
mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, `${name}.abi.json`), JSON.stringify(contract.abi, null, 2) + '\n')
writeFileSync(join(outDir, `${name}.bin`), contract.evm.bytecode.object + '\n')
