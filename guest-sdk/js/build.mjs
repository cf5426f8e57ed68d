#!/usr/bin/env node
// Builds a scenario script into a WebAssembly component for `runner`:
//
//   node sdk/build.mjs app.js -o app.wasm [--wit DIR]
//
// It bundles the script with this SDK (imports of 'runner' and
// 'runner/...' resolve here; the runner's WIT interfaces stay imports)
// using esbuild, then makes the component with componentize-qjs (QuickJS,
// pre-initialised by wizer), both from node_modules: `npm install` in the
// project, or the directory named by RUNNER_JS_TOOLS. Node.js 18 or later.

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

// One line per bundling error: where, and what; an import that cannot
// be resolved says what a scenario may import (and what k6's become).
function describeBuildError(e) {
  const errors = e?.errors ?? [];
  if (!errors.length) return String(e?.message ?? e);
  return errors.map((x) => {
    const at = x.location ? `${x.location.file}:${x.location.line}:${x.location.column + 1}: ` : '';
    const id = /^Could not resolve "([^"]+)"/.exec(x.text)?.[1];
    if (id === undefined) return at + x.text;
    const k6 = id.startsWith('k6') ? ` (for '${id}', import '${id.replace(/^k6/, 'runner')}')` : '';
    return `${at}cannot import '${id}'${k6}: a scenario imports 'runner', 'runner/http', 'runner/metrics', 'runner/mqtt', 'runner/nats', its own files and installed packages`;
  }).join('\n');
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
  const esbuild = await tool('esbuild');
  const bundleOf = async (options, format) => {
    try {
      const r = await esbuild.build({
        bundle: true,
        write: false,
        platform: 'neutral',
        mainFields: ['module', 'main'],
        logLevel: 'silent',
        format,
        ...options,
      });
      return r.outputFiles[0].text;
    } catch (e) {
      throw new Error(describeBuildError(e));
    }
  };
  // The script itself, as a function run at the first call into the
  // component rather than at build time (when wizer snapshots the SDK):
  // its top level may read __ENV, which only exists in a running VU.
  const imported = ['runner', ...MODULES.map((m) => `runner/${m}`)];
  const body = await bundleOf({
    entryPoints: [script],
    external: [...imported, 'runner:scenario/*'],
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
    entryPoints: [entry],
    external: ['runner:scenario/*'],
    plugins: [{
      name: 'runner-sdk',
      setup(build) {
        build.onResolve({ filter: /^runner(\/[a-z]+)?$/ }, (a) => (sdkModules[a.path] ? { path: sdkModules[a.path] } : undefined));
      },
    }],
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
  const message = String(e?.message ?? e);
  console.error(`error: cannot build ${args.script}: ${message}`);
  process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
