// The capsules list's logic, apart from its page: events applied to the list, search, sort.

import type { Capsule, WrennEvent } from './types';

/** The list after `e` (a capsule event carries the capsule as it now is). */
export function applyEvent(list: Capsule[], e: WrennEvent): Capsule[] {
  if (!e.event.startsWith('capsule.')) return list;
  const id = e.resource.id;
  const gone = e.event === 'capsule.destroy' || e.sandbox?.status === 'stopped';
  if (gone) return list.filter((c) => c.id !== id);
  if (!e.sandbox) return list;
  const i = list.findIndex((c) => c.id === id);
  if (i < 0) return [e.sandbox, ...list];
  const next = list.slice();
  next[i] = e.sandbox;
  return next;
}

export type SortKey = 'id' | 'status' | 'template' | 'vcpus' | 'memory_mb' | 'created_at' | 'last_active_at';

export function filterSort(list: Capsule[], search: string, key: SortKey, asc: boolean): Capsule[] {
  const q = search.trim().toLowerCase();
  const out = q
    ? list.filter(
        (c) =>
          c.id.toLowerCase().includes(q) ||
          c.template.toLowerCase().includes(q) ||
          c.status.includes(q) ||
          Object.entries(c.metadata ?? {}).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(q)),
      )
    : list.slice();
  out.sort((a, b) => {
    const x = a[key] ?? '';
    const y = b[key] ?? '';
    const r = x < y ? -1 : x > y ? 1 : 0;
    return asc ? r : -r;
  });
  return out;
}
