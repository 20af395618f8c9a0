// The team's lifecycle events (`GET /v1/events/stream`, server-sent events) read with fetch,
// so the request carries the token as a header (EventSource cannot). Reconnects after a drop
// with a growing delay; the caller reloads its list on each (re)connection, since events
// missed while away are not replayed.

import { headers } from './api';
import type { WrennEvent } from './types';

export type StreamState = 'connecting' | 'live' | 'retrying';

export interface Subscription {
  close(): void;
}

export function subscribe(
  onEvent: (e: WrennEvent) => void,
  onState: (s: StreamState) => void,
): Subscription {
  const abort = new AbortController();
  let delay = 500;

  async function once(): Promise<void> {
    onState('connecting');
    const resp = await fetch('/v1/events/stream', {
      headers: headers({ Accept: 'text/event-stream' }),
      signal: abort.signal,
      cache: 'no-store',
    });
    if (!resp.ok || !resp.body) throw new Error(`events: ${resp.status}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trimStart())
          .join('\n');
        if (!data) continue; // a keep-alive comment
        try {
          const e = JSON.parse(data) as WrennEvent;
          if (e.event === 'connected') {
            delay = 500;
            onState('live');
          }
          onEvent(e);
        } catch {
          // not an event: ignore
        }
      }
    }
  }

  (async () => {
    while (!abort.signal.aborted) {
      try {
        await once();
      } catch {
        // dropped or refused: try again
      }
      if (abort.signal.aborted) return;
      onState('retrying');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  })();

  return { close: () => abort.abort() };
}
