"""Ordered, numbered schema migrations of the SQLite store.

Each entry runs once, in order, inside one transaction; ``PRAGMA user_version`` records how
many have run. Never edit a released migration: append a new one.
"""

from __future__ import annotations

#: the completion cache's table (:mod:`runner.proxy.cache`), one of the migrations below
COMPLETION_CACHE_TABLE = """
CREATE TABLE IF NOT EXISTS completion_cache (
    key        TEXT PRIMARY KEY,     -- runner.proxy.cache.cache_key()
    provider   TEXT NOT NULL,
    model      TEXT NOT NULL,        -- as answered by the provider
    value      BLOB NOT NULL,        -- JSON: content, model, input_tokens, output_tokens
    created_at TEXT NOT NULL         -- ISO 8601, UTC
) WITHOUT ROWID
"""

MIGRATIONS: list[str] = [
    # 1: projects, experiments, traces, datasets, feedback
    """
    CREATE TABLE projects (
        uuid TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (owner, name)
    );
    CREATE TABLE experiments (
        uuid TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT '',
        project_uuid TEXT NOT NULL REFERENCES projects(uuid),
        name TEXT NOT NULL,
        run_name TEXT NOT NULL,
        is_public INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'running',
        created_at TEXT NOT NULL,
        finished_at TEXT,
        dataset_level_stats TEXT NOT NULL DEFAULT '[]',
        pinned_stats TEXT NOT NULL DEFAULT '[]',
        num_samples INTEGER,
        UNIQUE (project_uuid, run_name)
    );
    CREATE INDEX experiments_owner_created ON experiments(owner, created_at);
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT '',
        root_trace_id TEXT NOT NULL,
        parent_trace_id TEXT,
        experiment_uuid TEXT,
        project_uuid TEXT,
        trace_name TEXT,
        status TEXT,
        depth INTEGER NOT NULL DEFAULT 0,
        execution_order INTEGER NOT NULL DEFAULT 0,
        start_timestamp TEXT,
        end_timestamp TEXT,
        latency REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens INTEGER,
        cost REAL,
        is_root INTEGER NOT NULL DEFAULT 0,
        scores TEXT,
        created_at TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL
    );
    -- children only: roots are found through experiment_uuid, so most rows stay out of it
    CREATE INDEX traces_child_root ON traces(root_trace_id) WHERE is_root=0;
    CREATE INDEX traces_experiment_root ON traces(experiment_uuid, is_root);
    CREATE INDEX traces_project_start ON traces(project_uuid, start_timestamp);
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        column_names TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        last_updated_at TEXT NOT NULL,
        UNIQUE (owner, name)
    );
    CREATE TABLE testcases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id),
        inputs TEXT NOT NULL,
        target TEXT,
        tags TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX testcases_dataset ON testcases(dataset_id);
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL DEFAULT '',
        trace_id TEXT NOT NULL,
        score REAL NOT NULL,
        comment TEXT,
        target TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX feedback_trace ON feedback(trace_id);
    """,
    # issue 23: versioned prompts and their deployments (a deployment points at one version; every
    # move is an event, so the history is kept and a rollback knows where to go back to)
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (owner, name)
    );
    CREATE TABLE prompt_versions (
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        version INTEGER NOT NULL,
        spec TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (prompt_id, version)
    );
    CREATE TABLE prompt_deployments (
        owner TEXT NOT NULL DEFAULT '',
        deployment_id TEXT NOT NULL,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (owner, deployment_id)
    );
    CREATE INDEX prompt_deployments_prompt ON prompt_deployments(prompt_id);
    CREATE TABLE prompt_deployment_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL DEFAULT '',
        deployment_id TEXT NOT NULL,
        action TEXT NOT NULL,
        version INTEGER NOT NULL,
        previous_version INTEGER,
        author TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE INDEX prompt_deployment_events_deployment ON prompt_deployment_events(owner, deployment_id);
    """,
    # issue 13: trace ids are per owner (two tenants may hold the same id, neither sees the
    # other's); finished experiments whose rows change afterwards are marked stale, and their
    # pinned stats are recomputed on the next read (runner.store.Store.get_experiment)
    """
    CREATE TABLE traces_by_owner (
        trace_id TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        root_trace_id TEXT NOT NULL,
        parent_trace_id TEXT,
        experiment_uuid TEXT,
        project_uuid TEXT,
        trace_name TEXT,
        status TEXT,
        depth INTEGER NOT NULL DEFAULT 0,
        execution_order INTEGER NOT NULL DEFAULT 0,
        start_timestamp TEXT,
        end_timestamp TEXT,
        latency REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens INTEGER,
        cost REAL,
        is_root INTEGER NOT NULL DEFAULT 0,
        scores TEXT,
        created_at TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL,
        PRIMARY KEY (trace_id, owner)
    );
    INSERT INTO traces_by_owner(rowid, trace_id, owner, root_trace_id, parent_trace_id, experiment_uuid,
        project_uuid, trace_name, status, depth, execution_order, start_timestamp, end_timestamp, latency,
        input_tokens, output_tokens, total_tokens, cost, is_root, scores, created_at, data)
    SELECT rowid, trace_id, owner, root_trace_id, parent_trace_id, experiment_uuid,
        project_uuid, trace_name, status, depth, execution_order, start_timestamp, end_timestamp, latency,
        input_tokens, output_tokens, total_tokens, cost, is_root, scores, created_at, data FROM traces;
    DROP TABLE traces;
    ALTER TABLE traces_by_owner RENAME TO traces;
    CREATE INDEX traces_child_root ON traces(root_trace_id) WHERE is_root=0;
    CREATE INDEX traces_experiment_root ON traces(experiment_uuid, is_root);
    CREATE INDEX traces_project_start ON traces(project_uuid, start_timestamp);
    ALTER TABLE experiments ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
    CREATE TRIGGER traces_late_insert AFTER INSERT ON traces BEGIN
        UPDATE experiments SET stale=1 WHERE stale=0 AND finished_at IS NOT NULL AND owner=NEW.owner
            AND uuid=coalesce(NEW.experiment_uuid, (SELECT r.experiment_uuid FROM traces r
                WHERE r.trace_id=NEW.root_trace_id AND r.owner=NEW.owner));
    END;
    CREATE TRIGGER traces_late_update AFTER UPDATE ON traces BEGIN
        UPDATE experiments SET stale=1 WHERE stale=0 AND finished_at IS NOT NULL AND owner=NEW.owner
            AND uuid=coalesce(NEW.experiment_uuid, (SELECT r.experiment_uuid FROM traces r
                WHERE r.trace_id=NEW.root_trace_id AND r.owner=NEW.owner));
    END;
    CREATE TRIGGER traces_late_delete AFTER DELETE ON traces BEGIN
        UPDATE experiments SET stale=1 WHERE stale=0 AND finished_at IS NOT NULL AND owner=OLD.owner
            AND uuid=coalesce(OLD.experiment_uuid, (SELECT r.experiment_uuid FROM traces r
                WHERE r.trace_id=OLD.root_trace_id AND r.owner=OLD.owner));
    END;
    """,
    # 2 (issue 20): the Logs page walks every owner's root traces newest first
    """
    CREATE INDEX traces_roots_start ON traces(owner, start_timestamp) WHERE is_root=1;
    CREATE INDEX traces_roots_status ON traces(owner, status, start_timestamp) WHERE is_root=1;
    """,
    # issue 15 (finish-15): failures of a run stored with it, an extension of the finish call:
    # {"dataset_level": {eval: message}, "scorers": {scorer: example message}}; NULL when none were sent
    "ALTER TABLE experiments ADD COLUMN run_errors TEXT;",
    # issue 17 (round 3): the /completion cache as a table of the store, so on PostgreSQL every
    # server worker shares it; on SQLite it is the table runner.proxy.cache keeps in the store file
    COMPLETION_CACHE_TABLE,
    # issue 20 (round 3): a finished run's compact columns and summaries (data) and its rows as a
    # comparison reads them (pairing), what the web UI's run and compare pages read
    # (runner/store/columns.py); rewritten by every re-pin
    """
    CREATE TABLE run_columns (
        experiment_uuid TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        generation INTEGER NOT NULL DEFAULT 1,
        data TEXT NOT NULL,
        pairing TEXT,
        PRIMARY KEY (experiment_uuid, owner)
    );
    """,
    # issue 20 (round 4): a finished run's per-row columns in binary (runner/store/columns.py,
    # FORMAT 2): its first view reads them without parsing a JSON number per row and column
    "ALTER TABLE run_columns ADD COLUMN arrays BLOB;",
]
