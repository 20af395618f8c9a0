// Client-side routes on the History API: every console page is a path the server answers
// with index.html. Same-origin links are followed without a reload.

export const route = $state({ path: location.pathname, search: location.search });

export function navigate(to: string, replace = false): void {
  const url = new URL(to, location.origin);
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route.path = url.pathname;
  route.search = url.search;
  window.scrollTo(0, 0);
}

export function query(name: string): string | null {
  return new URLSearchParams(route.search).get(name);
}

/** Follow same-origin links inside the console without a reload. */
export function interceptLinks(): void {
  addEventListener('popstate', () => {
    route.path = location.pathname;
    route.search = location.search;
  });
  document.addEventListener('click', (ev) => {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) {
      return;
    }
    const a = (ev.target as Element | null)?.closest('a');
    if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
    // The API's own pages (/docs) and files are not the console's.
    if (a.pathname.startsWith('/docs') || a.pathname.startsWith('/v1/') || a.pathname === '/openapi.json') {
      return;
    }
    ev.preventDefault();
    navigate(a.pathname + a.search);
  });
}
