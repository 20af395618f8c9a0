// The API's bodies the console reads (the OpenAPI document at /openapi.json is the contract).

export type CapsuleStatus =
  | 'pending'
  | 'starting'
  | 'running'
  | 'paused'
  | 'stopped'
  | 'error'
  | 'missing';

export interface Capsule {
  id: string;
  status: CapsuleStatus;
  template: string;
  vcpus: number;
  memory_mb: number;
  disk_size_mb: number;
  timeout_sec: number;
  metadata: Record<string, string>;
  error: string | null;
  created_at: string;
  started_at: string | null;
  last_active_at: string | null;
  last_updated: string;
}

export interface CreatedCapsule extends Capsule {
  public: boolean;
  access_token: string;
}

export interface User {
  id: string;
  email: string;
  name: string;
  created_at: string;
}

/** `/v1/auth/session`: the console's cookie session (the token itself is HttpOnly). */
export interface ConsoleSession {
  user: User;
  csrf_token: string;
  expires_at: string;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_cursor: string | null;
}

export interface AdminUser {
  id: string;
  email: string;
  name: string;
  teams: number;
  created_at: string;
}

export interface AdminTeam {
  id: string;
  name: string;
  members: number;
  capsules: number;
  templates: number;
  created_at: string;
}

export interface AdminTemplate {
  team_id: string;
  team_name: string;
  name: string;
  vcpus: number;
  memory_mb: number;
  size_bytes: number;
  created_at: string;
}

export type Role = 'member' | 'admin' | 'owner';

export interface Team {
  id: string;
  name: string;
  created_at: string;
  role: Role;
  joined_at?: string;
}

export interface Member {
  user_id: string;
  email: string;
  name: string;
  role: Role;
  joined_at: string;
}

export interface Template {
  name: string;
  type: 'base' | 'snapshot';
  vcpus: number;
  memory_mb: number;
  size_bytes: number;
  created_at: string;
  platform: boolean;
  protected: boolean;
  metadata: Record<string, string>;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_by: string | null;
  owner_id: string | null;
  created_at: string;
  last_used_at: string | null;
}

export interface CreatedApiKey extends ApiKey {
  key: string;
}

export interface AuditEntry {
  id: string;
  actor: { type: string; id: string };
  action: string;
  resource: { type: string; id: string };
  outcome: string;
  detail: string;
  created_at: string;
}

export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_at: number;
  symlink_target: string | null;
}

export interface ProcessInfo {
  pid: number;
  tag: string;
  cmd: string;
  args: string[];
}

export interface MetricPoint {
  timestamp_unix: number;
  cpu_pct: number;
  mem_bytes: number;
  disk_bytes: number;
}

export interface CapsuleStats {
  range: string;
  current: { running_count: number; vcpus_reserved: number; memory_mb_reserved: number };
  peaks: { running_count: number; vcpus: number; memory_mb: number };
  series: { labels: string[]; running: number[]; vcpus: number[]; memory_mb: number[] };
}

export interface UsagePoint {
  date: string;
  cpu_minutes: number;
  ram_mb_minutes: number;
}

export interface Host {
  id: string;
  type: 'regular' | 'byoc';
  team_id?: string | null;
  provider?: string;
  availability_zone?: string;
  status: 'pending' | 'online' | 'unreachable';
  draining: boolean;
  address?: string;
  specs?: { arch: string; cpu_cores: number; memory_mb: number; disk_mb: number; slots: string; vmm: string; accel: string };
  load?: { running?: number; paused?: number; vcpus_reserved?: number; memory_mb_reserved?: number; disk_mb_reserved?: number };
  tags: string[];
  last_heartbeat_at?: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
}

export interface HostWithToken {
  host: Host;
  registration_token: string;
  expires_at: string;
}

export interface WrennEvent {
  event: string;
  outcome: string;
  resource: { id: string; type: string };
  actor: { type: string; id: string; name: string };
  metadata: Record<string, unknown>;
  error?: string | null;
  sandbox?: Capsule | null;
  timestamp: string;
}

export interface ConsoleSettings {
  proxy_domain: string;
  signup: 'open' | 'invite' | 'closed';
}
