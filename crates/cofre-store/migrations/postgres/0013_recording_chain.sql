-- Recording verification (issue 12) finds a session's `session.end` entry, which holds the
-- recording's frame count and final chain hash, by its object (`session:ID`) instead of reading
-- the whole audit log.
CREATE INDEX audit_log_object ON audit_log (object, action);
