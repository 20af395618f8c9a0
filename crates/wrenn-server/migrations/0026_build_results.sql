-- What a build ends in (builds/runner.rs): a template's kind, `snapshot` (memory and processes
-- kept) or `base` (a build without a started process: its disk flattened and booted afresh).
-- A build's host (builds/queue.rs): each host runs at most `--max-builds` builds at once.
ALTER TABLE templates ADD COLUMN kind TEXT NOT NULL DEFAULT 'snapshot';
ALTER TABLE builds ADD COLUMN host_id TEXT;
