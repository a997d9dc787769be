-- Webhook messages are made by one follower of the feed for every endpoint at once
-- (src/deliveries/messages.rs): its position is the one row here. An endpoint it follows for
-- has a row in webhook_cursors, written when it joined; its messages are made up to the
-- greater of that row and this one.
CREATE TABLE IF NOT EXISTS webhook_feed
(
    id       integer NOT NULL PRIMARY KEY CHECK (id = 1),
    position bigint  NOT NULL
);

-- The senders look for the endpoints with a message to send: only the pending ones, however
-- many were delivered.
CREATE INDEX IF NOT EXISTS webhook_messages_to_send ON webhook_messages (endpoint_id, position, ordinal)
    WHERE state = 'pending';
