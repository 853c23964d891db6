-- Command templates for rotation (issue 15, `--method command --template-file`). Keep in step
-- with the other database's 0018. Every upload is a new version and every version is kept, so an
-- audit entry's `template_version` always names the text that ran.
CREATE TABLE rotation_templates (
    credential_id BIGINT NOT NULL REFERENCES credentials(id),
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at BIGINT NOT NULL,
    PRIMARY KEY (credential_id, version)
);
-- The version a `command` rotation of this credential runs with.
ALTER TABLE credential_rotation ADD COLUMN template_version BIGINT;
