// Who is signed in, in which team. The session itself is the HttpOnly cookie the server sets
// (`/v1/auth/session`); the console holds only the user, their teams and the session's CSRF
// token in memory, and asks the server for them again after a reload (ARCHITECTURE.md, "Web
// console", says why). The chosen team's id (not a secret) is kept in sessionStorage so a
// reload stays in it.

import { api, ApiError, setCredentials, setTeam, whenExpired } from './api';
import { navigate } from './router.svelte';
import type { ConsoleSession, Team, User } from './types';

interface Session {
  /** The first `GET /v1/auth/session` has answered. */
  ready: boolean;
  user: User | null;
  teams: Team[];
  team: Team | null;
  expired: boolean;
  /** The user is an owner or admin of the platform team (the admin pages are theirs). */
  platformAdmin: boolean;
}

export const session: Session = $state({
  ready: false,
  user: null,
  teams: [],
  team: null,
  expired: false,
  platformAdmin: false,
});

const TEAM_KEY = 'wrenn.team';

function clear(): void {
  session.user = null;
  session.teams = [];
  session.team = null;
  session.platformAdmin = false;
  setCredentials(null, null);
}

whenExpired(() => {
  clear();
  session.expired = true;
  navigate('/login', true);
});

function remembered(): string | null {
  try {
    return sessionStorage.getItem(TEAM_KEY);
  } catch {
    return null;
  }
}

function remember(id: string | null): void {
  try {
    if (id) sessionStorage.setItem(TEAM_KEY, id);
    else sessionStorage.removeItem(TEAM_KEY);
  } catch {
    // storage refused: a reload starts in the first team
  }
}

async function adopt(s: ConsoleSession): Promise<void> {
  setCredentials(s.csrf_token, null);
  const teams = await api<Team[]>('GET', '/v1/teams');
  session.teams = teams;
  const wanted = remembered();
  session.team = teams.find((t) => t.id === wanted) ?? teams[0] ?? null;
  setTeam(session.team?.id ?? null);
  session.platformAdmin = await isPlatformAdmin();
  session.user = s.user;
  session.expired = false;
}

/** Whether the admin API answers this user (in their platform team, if any). */
async function isPlatformAdmin(): Promise<boolean> {
  for (const t of session.teams.filter((t) => t.role === 'owner' || t.role === 'admin')) {
    const r = await fetch('/v1/admin/teams', { headers: { 'X-Team-Id': t.id } }).catch(() => null);
    if (r?.ok) {
      adminTeam = t.id;
      return true;
    }
  }
  return false;
}

let adminTeam: string | null = null;

/** The team the admin API is asked in. */
export function platformTeam(): string | null {
  return adminTeam;
}

/** After a reload: the session of the cookie, if it is still live. */
export async function restore(): Promise<void> {
  try {
    const s = await api<ConsoleSession>('GET', '/v1/auth/session');
    await adopt(s);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) console.warn('session', e);
    clear();
  } finally {
    session.ready = true;
  }
}

export async function signIn(email: string, password: string): Promise<void> {
  const s = await api<ConsoleSession>('POST', '/v1/auth/session', { email, password });
  await adopt(s);
}

export async function signOut(): Promise<void> {
  try {
    await api('DELETE', '/v1/auth/session');
  } catch {
    // the console forgets the session either way
  }
  clear();
  remember(null);
  navigate('/login', true);
}

export function switchTeam(id: string): void {
  const t = session.teams.find((x) => x.id === id);
  if (!t) return;
  session.team = t;
  setTeam(t.id);
  remember(t.id);
}

export async function reloadTeams(): Promise<void> {
  session.teams = await api<Team[]>('GET', '/v1/teams');
  if (session.team) {
    session.team = session.teams.find((t) => t.id === session.team?.id) ?? session.teams[0] ?? null;
  }
}

export function canManage(): boolean {
  return session.team?.role === 'owner' || session.team?.role === 'admin';
}
