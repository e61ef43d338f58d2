-- Whether a message may have attachments. A history page reads each message's attachments with
-- a subquery; run for all 50 rows of a page it was ≈ 30 % of PostgreSQL's time per page, though
-- most messages have none. Pages now run it only for rows with this flag. A trigger keeps it, so
-- every way of adding attachments (sends, the Mikoto importer) sets it in the same statement.
-- It is never cleared: attachments go away only with their message.
ALTER TABLE messages ADD COLUMN has_attachments boolean NOT NULL DEFAULT false;

UPDATE messages SET has_attachments = true
WHERE id IN (SELECT message_id FROM message_attachments);

CREATE FUNCTION messages_mark_attachments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE messages SET has_attachments = true
    WHERE id IN (SELECT message_id FROM added) AND NOT has_attachments;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_attachments_mark AFTER INSERT ON message_attachments
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION messages_mark_attachments();
