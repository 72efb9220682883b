"""Ordered, numbered schema migrations of the SQLite store.

Each entry runs once, in order, inside one transaction; ``PRAGMA user_version`` records how
many have run. Never edit a released migration: append a new one.
"""

from __future__ import annotations

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
    # 2 (issue 20): the Logs page walks every owner's root traces newest first
    """
    CREATE INDEX traces_roots_start ON traces(owner, start_timestamp) WHERE is_root=1;
    CREATE INDEX traces_roots_status ON traces(owner, status, start_timestamp) WHERE is_root=1;
    """,
]
