// Reading the status page in a real browser (playwright-core on Debian's chromium).

import type { Page } from 'playwright-core';

// Runs in the page; the project's type check knows no DOM.
declare function getComputedStyle(element: unknown): { backgroundColor: string };
declare const document: { querySelector(selector: string): { isConnected: boolean } | null };

/**
 * The background colour of the first element matching `selector`. The page re-renders
 * rows as events and polls arrive; an element replaced between finding it and reading
 * its style is detached and has none, so this reads again (50 times at most) until the
 * element is the live one; '' if it never is.
 */
export async function backgroundOf(page: Page, selector: string): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const colour = await page.evaluate((sel) => {
      const el = document.querySelector(sel);
      return el === null || !el.isConnected ? '' : getComputedStyle(el).backgroundColor;
    }, selector);
    if (colour !== '') return colour;
    await new Promise((r) => setTimeout(r, 20));
  }
  return '';
}
