#!/usr/bin/env node
// Builds a scenario script into a WebAssembly component for `runner`:
//
//   node sdk/build.mjs app.js -o app.wasm [--wit DIR]
//
// It bundles the script with this SDK (imports of 'runner' and
// 'runner/...' resolve here; the runner's WIT interfaces stay imports)
// using rolldown, then makes the component with componentize-qjs (QuickJS,
// pre-initialised by wizer), both from node_modules: `npm install` in the
// project, or the directory named by RUNNER_JS_TOOLS.

import { mkdtempSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));
const MODULES = ['http', 'metrics', 'mqtt', 'nats'];

function usage(message) {
  console.error(`error: ${message}\nusage: node ${join('sdk', 'build.mjs')} SCRIPT.js [-o OUT.wasm] [--wit DIR]`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = { script: undefined, out: undefined, wit: undefined };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '-o' || v === '--out') a.out = argv[++i];
    else if (v === '--wit') a.wit = argv[++i];
    else if (v.startsWith('-')) usage(`unknown option ${v}`);
    else if (a.script === undefined) a.script = v;
    else usage(`one script at a time (got ${a.script} and ${v})`);
  }
  if (!a.script) usage('name the scenario script to build');
  a.out ??= a.script.replace(/\.[cm]?js$/, '') + '.wasm';
  // A project has the WIT beside the SDK; this repository has it at the top.
  a.wit ??= [join(SDK, 'wit'), join(SDK, '..', '..', 'wit')].find((d) => existsSync(d));
  if (!a.wit) usage(`no WIT directory beside ${SDK}: pass --wit DIR`);
  return a;
}

// Loads a build tool from the project's node_modules (or RUNNER_JS_TOOLS).
async function tool(name) {
  const bases = [process.env.RUNNER_JS_TOOLS, process.cwd(), SDK].filter(Boolean);
  for (const base of bases) {
    try {
      const path = createRequire(join(resolve(base), 'package.json')).resolve(name);
      return await import(pathToFileURL(path).href);
    } catch {
      // Try the next place.
    }
  }
  console.error(`error: ${name} is not installed: run \`npm install\` in the project (it installs the build tools)`);
  process.exit(1);
}

const args = parseArgs(process.argv.slice(2));
const script = resolve(args.script);
if (!existsSync(script) || !statSync(script).isFile()) usage(`${args.script} does not exist`);

const work = mkdtempSync(join(tmpdir(), 'runner-js-'));
try {
  const { rolldown } = await tool('rolldown');
  const bundleOf = async (options, format) => {
    const bundle = await rolldown({ platform: 'neutral', logLevel: 'warn', ...options });
    const { output } = await bundle.generate({ format, exports: 'named' });
    await bundle.close();
    return output[0].code;
  };
  // The script itself, as a function run at the first call into the
  // component rather than at build time (when wizer snapshots the SDK):
  // its top level may read __ENV, which only exists in a running VU.
  const imported = ['runner', ...MODULES.map((m) => `runner/${m}`)];
  const body = await bundleOf({
    input: script,
    external: [...imported, /^runner:scenario\//],
    resolve: { mainFields: ['module', 'main'] },
    onLog(level, log, handler) {
      if (log.code === 'UNRESOLVED_IMPORT') {
        const id = /'([^']+)'/.exec(log.message)?.[1] ?? log.message;
        const k6 = id.startsWith('k6') ? ` (for '${id}', import '${id.replace(/^k6/, 'runner')}')` : '';
        throw new Error(`cannot import '${id}'${k6}: a scenario imports 'runner', 'runner/http', 'runner/metrics', 'runner/mqtt', 'runner/nats', its own files and installed packages`);
      }
      handler(level, log);
    },
  }, 'cjs');
  const entry = join(work, 'entry.js');
  writeFileSync(entry, [
    ...imported.map((id, i) => `import * as m${i} from ${JSON.stringify(id)};`),
    `import { scenarioFor } from ${JSON.stringify(join(SDK, '_scenario.js'))};`,
    `const modules = { ${imported.map((id, i) => `${JSON.stringify(id)}: { __esModule: true, ...m${i} }`).join(', ')} };`,
    'function load() {',
    '  const module = { exports: {} };',
    '  const require = (id) => {',
    '    if (id in modules) return modules[id];',
    '    throw new Error(`cannot import "${id}": a scenario imports \'runner\', \'runner/http\', \'runner/metrics\', \'runner/mqtt\', \'runner/nats\' and its own files`);',
    '  };',
    '  (function (module, exports, require) {',
    body,
    '  })(module, module.exports, require);',
    '  return module.exports;',
    '}',
    'export const scenario = scenarioFor(load);',
    '',
  ].join('\n'));
  const sdkModules = {
    runner: join(SDK, 'index.js'),
    ...Object.fromEntries(MODULES.map((m) => [`runner/${m}`, join(SDK, `${m}.js`)])),
  };
  const code = await bundleOf({
    input: entry,
    external: [/^runner:scenario\//],
    plugins: [{ name: 'runner-sdk', resolveId: (id) => sdkModules[id] ?? null }],
  }, 'esm');
  const { componentize } = await tool('componentize-qjs');
  const { component } = await componentize({
    witPath: resolve(args.wit),
    jsSource: code,
    world: 'load-test',
    sync: true,
  });
  writeFileSync(args.out, component);
  console.log(`built ${args.out} (${Math.round(component.length / 1024)} KiB)`);
} catch (e) {
  const message = String(e?.message ?? e).replace(/^Build failed with \d+ errors?:\s*/, '').replace(/^Error: /, '')
    .split('\n').filter((l) => !/^\s+at /.test(l)).join('\n').trimEnd();
  console.error(`error: cannot build ${args.script}: ${message}`);
  process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
