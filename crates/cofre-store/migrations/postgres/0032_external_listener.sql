-- The external listener (issue 18) has a network policy of its own, like the others.
INSERT INTO network_policy (listener) VALUES ('external');
