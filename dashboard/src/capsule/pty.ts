// One terminal session over `GET /v1/capsules/{id}/pty`: starts a shell, or reattaches to it by
// its tag after the connection dropped (the server replays the screen so far). The caller owns
// the xterm.js Terminal; this owns the socket.

import { enc, wsProtocols, wsUrl } from '../lib/api';

export type PtyState = 'connecting' | 'open' | 'reconnecting' | 'exited' | 'failed';

export interface PtyHandlers {
  output(data: Uint8Array, replay: boolean): void;
  state(s: PtyState, detail?: string): void;
}

export class PtySession {
  tag: string | null = null;
  private ws: WebSocket | null = null;
  private closed = false;
  private retries = 0;
  private size: { cols: number; rows: number };
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly capsule: string,
    private readonly on: PtyHandlers,
    size: { cols: number; rows: number },
  ) {
    this.size = size;
    this.connect();
  }

  private connect(): void {
    const replay = this.tag !== null;
    const ws = new WebSocket(wsUrl(`/v1/capsules/${enc(this.capsule)}/pty`), wsProtocols());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.on.state(replay ? 'reconnecting' : 'connecting');
    let first = true;
    ws.onopen = () => {
      const start = replay
        ? { type: 'connect', tag: this.tag }
        : { type: 'start', cmd: '/bin/bash', args: ['-l'], envs: { TERM: 'xterm-256color' }, ...this.size };
      ws.send(JSON.stringify(start));
      if (replay) {
        this.retries = 0;
        this.on.state('open');
        this.resize(this.size.cols, this.size.rows);
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        this.on.output(new Uint8Array(ev.data as ArrayBuffer), replay && first);
        first = false;
        return;
      }
      let msg: { type?: string; tag?: string; exit_code?: number; data?: string; fatal?: boolean };
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      switch (msg.type) {
        case 'started':
          this.tag = msg.tag ?? null;
          this.retries = 0;
          this.on.state('open');
          break;
        case 'ping':
          ws.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'exit':
          this.closed = true;
          this.on.state('exited', `exit code ${msg.exit_code}`);
          break;
        case 'error':
          if (msg.fatal) {
            this.closed = true;
            this.on.state('failed', msg.data);
          }
          break;
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) return;
      if (this.tag === null || this.retries >= 8) {
        this.closed = true;
        this.on.state('failed', 'the connection closed');
        return;
      }
      // Dropped: reattach by tag after a short wait (the shell keeps running meanwhile).
      this.retries++;
      this.on.state('reconnecting');
      setTimeout(() => !this.closed && this.connect(), Math.min(500 * 2 ** this.retries, 8000));
    };
  }

  send(data: string): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(this.encoder.encode(data));
  }

  resize(cols: number, rows: number): void {
    this.size = { cols, rows };
    if (this.ws?.readyState === WebSocket.OPEN && this.tag) {
      this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    }
  }

  /** Ends the shell (kill) and the socket. */
  close(kill = true): void {
    this.closed = true;
    if (kill && this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'kill' }));
    this.ws?.close();
  }
}
