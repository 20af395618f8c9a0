// The one way the console talks to the API: same origin, signed in by the HttpOnly session
// cookie (set by `POST /v1/auth/session`; no script can read it), with the session's CSRF
// token as `X-CSRF-Token` and the team as `X-Team-Id` (see ARCHITECTURE.md, "Web console").
// The CSRF token lives in this module's memory only; a reload asks `GET /v1/auth/session`
// for it again. Nothing is kept in localStorage.

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let csrf: string | null = null;
let team: string | null = null;
let onExpired: (() => void) | null = null;

export function setCredentials(csrfToken: string | null, teamId: string | null): void {
  csrf = csrfToken;
  team = teamId;
}

export function setTeam(teamId: string | null): void {
  team = teamId;
}

export function signedIn(): boolean {
  return csrf !== null;
}

export function currentTeam(): string | null {
  return team;
}

/** Called once when a signed-in request is refused as `unauthorized` (expired, logged out). */
export function whenExpired(f: () => void): void {
  onExpired = f;
}

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  if (csrf) h['X-CSRF-Token'] = csrf;
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
  if (status === 401 && csrf && onExpired) {
    csrf = null;
    onExpired();
  }
}

/** A request to the API; JSON in and out. Throws ApiError on any error answer. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  return apiIn<T>(team, method, path, body);
}

/** [`api`] acting in a given team (the admin pages ask in the platform team). */
export async function apiIn<T>(teamId: string | null, method: string, path: string, body?: unknown): Promise<T> {
  let resp: Response;
  const h = headers(body === undefined ? {} : { 'Content-Type': 'application/json' });
  if (teamId) h['X-Team-Id'] = teamId;
  else delete h['X-Team-Id'];
  try {
    resp = await fetch(path, {
      method,
      headers: h,
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

/** The subprotocols that carry the CSRF token and team of a WebSocket (browsers cannot set
 * headers on one; the cookie rides along by itself). */
export function wsProtocols(): string[] {
  const p = ['wrenn'];
  if (csrf) p.push(`wrenn.csrf.${csrf}`);
  if (team) p.push(`wrenn.team.${team}`);
  return p;
}

export function wsUrl(path: string): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

export const enc = encodeURIComponent;
