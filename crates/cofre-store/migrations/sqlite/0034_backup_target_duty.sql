-- Duties by mode (issue 13) (sqlite). Keep in step with ../postgres/0034_backup_target_duty.sql.

-- Whose backups a target holds: 'credentials' (break-glass files, the customer's admins' in every
-- mode) or 'system' (system, snapshots, recordings: the vendor's operator in saas). NULL until its
-- first job when none was given at creation; once set it never changes, and jobs of the other
-- duty are refused on it.
ALTER TABLE backup_targets ADD COLUMN duty TEXT;

-- Existing targets take the duty of their jobs. One that a credentials job uses is the customer's
-- (the key to the customer's own server must not pass to the vendor), even if system jobs use it
-- too; those keep running from the scheduler, and new ones are refused on it.
UPDATE backup_targets SET duty = 'credentials'
    WHERE id IN (SELECT target_id FROM backup_jobs WHERE kind = 'credentials');
UPDATE backup_targets SET duty = 'system'
    WHERE duty IS NULL AND id IN (SELECT target_id FROM backup_jobs);
