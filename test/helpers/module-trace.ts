// Loaded with `--import` into tandem's processes (workers inherit it) by tests that check
// which modules a role loads while it runs, lazily loaded ones included: every module a
// process resolves, import or require, is appended to $TANDEM_MODULE_TRACE_DIR/modules-PID.txt.

import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const dir = process.env.TANDEM_MODULE_TRACE_DIR;
if (dir !== undefined) {
  const file = `${dir}/modules-${process.pid}.txt`;
  registerHooks({
    resolve(specifier, context, next) {
      const resolved = next(specifier, context);
      appendFileSync(file, `${resolved.url}\n`);
      return resolved;
    },
  });
}
