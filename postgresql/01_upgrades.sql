-- Tables whose shape changed, dropped so that 02_tables.sql creates them anew; each is a mirror that the
-- sink connectors fill again from its topic (their consumer groups start from the topic's beginning).

-- ops.dead_letters was keyed by a "dead_letters:<partition>:<offset>" id written by our own connect worker;
-- Kafka Connect keys it by letter_partition, letter_offset
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'ops' AND table_name = 'dead_letters' AND column_name = 'dead_letter_id') THEN
        DROP TABLE ops.dead_letters;
    END IF;
END $$;
-- the positions of that worker's sinks: Kafka Connect keeps them in its consumer groups
DROP TABLE IF EXISTS ops.connect_offsets;
