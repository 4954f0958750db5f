// Runs a MicroPython program in the official WebAssembly port (32-bit, like ESP32 and RP2040)
// under Node.js, with the firmware on its path. docs/wasm32.md.
//
//   node tools/wasm32/run.mjs [--heap 96k] [--flash HOSTDIR] [--firmware DIR] [--heap-after 1]
//                             PROGRAM.py [ARGS...]
//
// The port is `@micropython/micropython-webassembly-pyscript`, installed by .ci/run into
// .node/ (or set PE_WASM_MICROPYTHON to its micropython.mjs). The program runs with top-level
// `await` allowed (the port has no asyncio.run: its event loop is JavaScript's; a last line
// `asyncio.run(main())` is run as `await main()`). Files:
// firmware/ (or --firmware DIR: e.g. the .mpy build of hil/sim/firmware.build_mpy, bytecode as
// on a board) and tools/wasm32/*.py are copied into the in-memory filesystem at /fw and /lib
// (sys.path); the program runs in /flash, which is HOSTDIR's contents when --flash is given,
// written back to HOSTDIR when the program ends (so a second run is a reboot on the same flash).
// The port has no os.urandom: the runner adds one (node:crypto bytes), the only shim.
// --heap-after 1: when the program ends, print {"heap_after": gc.mem_alloc()} after a collection
// (inside the program, this port's gc.collect() keeps garbage the running program made: its
// objects are only reclaimed once the top-level code has returned; docs/wasm32.md).
// Exit status: 0, the SystemExit code, or 1 on an uncaught exception (traceback on stderr).
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const pkg = process.env.PE_WASM_MICROPYTHON
  || path.join(root, ".node/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");

function usage(msg) {
  process.stderr.write(`run.mjs: ${msg}\nusage: node tools/wasm32/run.mjs [--heap 96k] [--flash DIR] [--firmware DIR] PROGRAM.py [ARGS...]\n`);
  process.exit(2);
}

let heap = 96 * 1024;
let flash = null;
let firmware = path.join(root, "firmware");
let heapAfter = false;
const argv = process.argv.slice(2);
while (argv.length && argv[0].startsWith("--")) {
  const opt = argv.shift();
  const val = argv.shift();
  if (val === undefined) usage(`${opt} needs a value`);
  if (opt === "--heap") {
    const m = /^(\d+)([kKmM]?)$/.exec(val);
    if (!m) usage(`bad --heap ${val} (e.g. 96k)`);
    heap = parseInt(m[1], 10) * ({ "": 1, k: 1024, m: 1048576 })[m[2].toLowerCase()];
  } else if (opt === "--flash") {
    flash = path.resolve(val);
  } else if (opt === "--heap-after") {
    heapAfter = val === "1";
  } else if (opt === "--firmware") {
    firmware = path.resolve(val);
  } else usage(`unknown option ${opt}`);
}
if (!argv.length) usage("no program");
if (!fs.existsSync(pkg)) {
  process.stderr.write(`run.mjs: ${pkg} not found: install the port with `
    + "`npm install --prefix .node @micropython/micropython-webassembly-pyscript@1.29.0-6` (bash .ci/run does)\n");
  process.exit(2);
}
// the same file runs in the unix port: its last line `asyncio.run(main())` becomes `await main()`
const program = fs.readFileSync(argv[0], "utf8").replace(/^asyncio\.run\(main\(\)\)\s*$/m, "await main()\n");
const { loadMicroPython } = await import(pathToFileURL(pkg).href);

const out = (s) => process.stdout.write(s + "\n");
const err = (s) => process.stderr.write(s + "\n");
const mp = await loadMicroPython({ heapsize: heap, stdout: out, stderr: err });
const FS = mp.FS;

function copyIn(src, dst, filter) {
  FS.mkdirTree(dst);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    if (e.isDirectory()) {
      if (e.name !== "__pycache__") copyIn(s, `${dst}/${e.name}`, filter);
    } else if (!filter || filter(e.name)) {
      FS.writeFile(`${dst}/${e.name}`, fs.readFileSync(s));
    }
  }
}

function copyOut(src, dst) {
  fs.mkdirSync(dst, { recursive: true });
  for (const name of FS.readdir(src)) {
    if (name === "." || name === "..") continue;
    const s = `${src}/${name}`;
    if (FS.isDir(FS.stat(s).mode)) copyOut(s, path.join(dst, name));
    else fs.writeFileSync(path.join(dst, name), FS.readFile(s));
  }
}

const py = (n) => n.endsWith(".py");
copyIn(firmware, "/fw", (n) => py(n) || n.endsWith(".mpy"));
copyIn(here, "/lib", py);
if (flash && fs.existsSync(flash)) copyIn(flash, "/flash");
else FS.mkdirTree("/flash");

mp.globals.set("_pe_argv", [argv[0], ...argv.slice(1)]);
mp.globals.set("_pe_rand", (n) => Array.from(randomBytes(n)));
mp.runPython(`
import os, sys
sys.path[:] = ["", "/fw", "/lib", ".frozen"]
sys.argv[:] = list(_pe_argv)
os.chdir("/flash")
if not hasattr(os, "urandom"):
    os.urandom = lambda n: bytes(_pe_rand(n))
del _pe_argv
`);

let code = 0;
try {
  await mp.runPythonAsync(program);
} catch (e) {
  if (e.name !== "PythonError") throw e;
  if (e.type === "SystemExit") {
    const m = /SystemExit: (\d+)/.exec(e.message);
    code = m ? parseInt(m[1], 10) : 0;
  } else {
    err(e.message.trimEnd());
    code = 1;
  }
}
if (heapAfter && code === 0) {
  mp.runPython("import gc, json\ngc.collect()\nprint(json.dumps({'heap_after': gc.mem_alloc()}))");
}
if (flash) copyOut("/flash", flash);
process.exit(code);
