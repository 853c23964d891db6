-- Lists that stay fast at scale (issue 16, `cofre-bench console`).
-- The audit trail's search by actor or by action, in seq order: without these a page of a rare
-- actor's entries scanned the whole trail.
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
-- A page of users with their groups: the primary key (group_id, user_id) does not serve it.
CREATE INDEX access_group_members_user ON access_group_members (user_id);
