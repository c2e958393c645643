#!/usr/bin/env node
// The `tandem` command. In the source tree it runs the TypeScript in src/ through Node's
// own type stripping; an installed package has no src/ (Node does not strip types under
// node_modules) and runs dist/, the JavaScript `npm pack` compiles from it (prepack).
import { existsSync } from 'node:fs';

const source = new URL('../src/cli.ts', import.meta.url);
const { main } = await import(existsSync(source) ? source.href : new URL('../dist/cli.js', import.meta.url).href);

const code = await main(process.argv.slice(2));
if (code !== -1) process.exitCode = code;
