// Tests that need something this machine may lack (root, network namespaces, arping,
// Chromium, etcd) skip with the reason on a developer's machine. Under CI=true they must
// run: a missing requirement there is a failed test that says what is missing, never a
// silent skip that lets a green run hide an untested feature.

import { test } from 'node:test';

/**
 * The `skip` option for tests that need what `reason` says is missing (null: nothing is).
 * Under CI=true a non-null reason also registers a failing test that names it.
 */
export function skipUnlessCi(reason: string | null): string | false {
  if (reason === null) return false;
  if (process.env.CI === 'true') {
    test(`required here: ${reason}`, () => {
      throw new Error(`${reason}; with CI=true this test must run, not skip (.ci/run installs what it needs)`);
    });
  }
  return reason;
}
