-- Invitations by policy and mailed codes (issue 18). Numbered 0035: 0034 is left to another branch.
--
-- A user with a policy's `invite` access asks for an invitation; where the policy wants approval
-- it is an access request of access `invite` that carries the invitation asked for (JSON: the
-- API's InviteRequest, an address, names, a window and a reason, and the address the requester
-- asked from; no secret). Its approval keeps the invitation and sends the link. NULL for every
-- other request.
ALTER TABLE access_requests ADD COLUMN invitation TEXT;

-- `[external] second_factor = "email"`: the one code mailed to an invitee after its password,
-- at most one per invitation (a new login replaces it). The code is kept only as an HMAC under a
-- key derived from the master key, so the table alone does not give it away even though the code
-- is short; `ticket_hash` is the SHA-256 of the random ticket the code page carries, which names
-- the login it belongs to without naming the invitation.
CREATE TABLE invitation_codes (
    invitation_id TEXT PRIMARY KEY REFERENCES invitations (id),
    ticket_hash TEXT NOT NULL UNIQUE,
    code_mac TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    tries BIGINT NOT NULL DEFAULT 0
);
