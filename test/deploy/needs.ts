// What a deployment test needs from the machine. Without it the test is skipped with
// the reason, except under CI=true, where a missing part is a failure that says what
// to install.

import { test } from 'node:test';
import { run } from '../helpers/netns.ts';

/** The first of `names` that is not on PATH, as a reason; null when all are. */
export async function missingCommand(...names: { cmd: string; pkg: string }[]): Promise<string | null> {
  for (const { cmd, pkg } of names) {
    if ((await run('sh', ['-c', `command -v ${cmd}`])).code !== 0) return `${cmd} is not installed (apt-get install ${pkg})`;
  }
  return null;
}

/** `skip` for describe/test options: the reason, or false. Under CI=true a reason becomes a failing test instead. */
export function skipUnless(reason: string | null, what: string): string | false {
  if (reason === null) return false;
  if (process.env.CI === 'true') {
    test(`${what}: can run here`, () => {
      throw new Error(reason);
    });
  }
  return reason;
}
