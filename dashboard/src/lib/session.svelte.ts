// Who is signed in, in which team. Held in memory only: a reload signs out (ARCHITECTURE.md,
// "Web console", says why).

import { api, setCredentials, setTeam, whenExpired } from './api';
import { navigate } from './router.svelte';
import type { LoginResponse, Team, User } from './types';

interface Session {
  user: User | null;
  teams: Team[];
  team: Team | null;
  expired: boolean;
}

export const session: Session = $state({ user: null, teams: [], team: null, expired: false });

whenExpired(() => {
  session.user = null;
  session.teams = [];
  session.team = null;
  session.expired = true;
  setCredentials(null, null);
  navigate('/login', true);
});

export async function signIn(email: string, password: string): Promise<void> {
  const r = await api<LoginResponse>('POST', '/v1/auth/login', { email, password });
  setCredentials(r.token, null);
  const teams = await api<Team[]>('GET', '/v1/teams');
  session.teams = teams;
  session.team = teams[0] ?? null;
  setTeam(session.team?.id ?? null);
  session.user = r.user;
  session.expired = false;
}

export async function signOut(): Promise<void> {
  try {
    await api('POST', '/v1/auth/logout');
  } catch {
    // the token is dropped either way
  }
  setCredentials(null, null);
  session.user = null;
  session.teams = [];
  session.team = null;
  navigate('/login', true);
}

export function switchTeam(id: string): void {
  const t = session.teams.find((x) => x.id === id);
  if (!t) return;
  session.team = t;
  setTeam(t.id);
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
