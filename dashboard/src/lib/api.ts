// The one way the console talks to the API: same origin, `Authorization: Bearer <user token>`
// and `X-Team-Id`. The token lives only in this module's memory (see ARCHITECTURE.md, "Web
// console"): never in localStorage or a cookie, so no other page can use it and a script
// injected later cannot find it stored.

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let token: string | null = null;
let team: string | null = null;
let onExpired: (() => void) | null = null;

export function setCredentials(t: string | null, teamId: string | null): void {
  token = t;
  team = teamId;
}

export function setTeam(teamId: string | null): void {
  team = teamId;
}

export function currentToken(): string | null {
  return token;
}

export function currentTeam(): string | null {
  return team;
}

/** Called once when a request with a token is refused as `unauthorized` (expired, logged out). */
export function whenExpired(f: () => void): void {
  onExpired = f;
}

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  if (token) h['Authorization'] = `Bearer ${token}`;
  if (team) h['X-Team-Id'] = team;
  return h;
}

/** The API's error answer `{"error":{"code","message"}}` as an ApiError. */
export async function errorOf(resp: Response): Promise<ApiError> {
  let code = `http_${resp.status}`;
  let message = resp.statusText || 'request failed';
  try {
    const body = await resp.json();
    if (body?.error?.code) code = body.error.code;
    if (body?.error?.message) message = body.error.message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, code, message);
}

function expired(status: number): void {
  if (status === 401 && token && onExpired) {
    token = null;
    onExpired();
  }
}

/** A request to the API; JSON in and out. Throws ApiError on any error answer. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network_error', `the server did not answer: ${String(e)}`);
  }
  if (!resp.ok) {
    expired(resp.status);
    throw await errorOf(resp);
  }
  if (resp.status === 204 || resp.status === 202 && resp.headers.get('content-length') === '0') {
    return undefined as T;
  }
  const type = resp.headers.get('content-type') ?? '';
  if (type.includes('application/json')) return (await resp.json()) as T;
  return (await resp.text()) as unknown as T;
}

/** A request whose answer is bytes (file reads). */
export async function apiBlob(method: string, path: string, body: unknown): Promise<Blob> {
  const resp = await fetch(path, {
    method,
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
  });
  if (!resp.ok) {
    expired(resp.status);
    throw await errorOf(resp);
  }
  return resp.blob();
}

/** The subprotocols that carry the credential of a WebSocket (browsers cannot set headers). */
export function wsProtocols(): string[] {
  const p = ['wrenn'];
  if (token) p.push(`wrenn.token.${token}`);
  if (team) p.push(`wrenn.team.${team}`);
  return p;
}

export function wsUrl(path: string): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

export const enc = encodeURIComponent;
