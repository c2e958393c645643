#!/usr/bin/env node
// The installed entry point: tandem is TypeScript run by Node's own type stripping.
import { main } from '../src/cli.ts';

const code = await main(process.argv.slice(2));
if (code !== -1) process.exitCode = code;
