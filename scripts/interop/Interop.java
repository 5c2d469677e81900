// The Java client's side of the interoperability tests (tests/interop.rs):
// writes records of every shape with Apache Kafka's Java producer, and reads
// topics with its Java consumer, printing each record as one JSON line so
// the tests compare every field. Run through scripts/kafka-local, which puts
// Kafka's jars on the class path:
//
//   scripts/kafka-local java scripts/interop/Interop.java write BOOTSTRAP PREFIX
//   scripts/kafka-local java scripts/interop/Interop.java read BOOTSTRAP TOPIC COUNT ISOLATION
//
// Record lines: {"topic","partition","offset","key","value","headers",
// "timestamp","timestamp_type","aborted"}; key, value and header values are
// base64 (null when null).

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Interop {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    /// Records per codec topic.
    static final int PER_CODEC = 200;
    /// Keys written to the partitioner topic.
    static final int KEYS = 200;
    /// A value close to the broker's default message.max.bytes (1048588).
    static final int BIG = 1_048_000;

    public static void main(String[] args) throws Exception {
        switch (args.length > 0 ? args[0] : "") {
            case "write" -> write(args[1], args[2]);
            case "read" -> read(args[1], args[2], Integer.parseInt(args[3]), args[4]);
            default -> {
                System.err.println("usage: Interop write BOOTSTRAP PREFIX | read BOOTSTRAP TOPIC COUNT ISOLATION");
                System.exit(2);
            }
        }
    }

    static byte[] bytes(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    static Properties producerProps(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("max.request.size", "2097152");
        p.put("linger.ms", "5");
        return p;
    }

    static void write(String bootstrap, String prefix) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (String codec : CODECS) {
            topics.add(new NewTopic(prefix + "-codec-" + codec, 2, (short) 1));
        }
        topics.add(new NewTopic(prefix + "-shapes", 2, (short) 1));
        topics.add(new NewTopic(prefix + "-log-append", 1, (short) 1)
                .configs(Map.of("message.timestamp.type", "LogAppendTime")));
        topics.add(new NewTopic(prefix + "-big", 1, (short) 1));
        topics.add(new NewTopic(prefix + "-txn", 1, (short) 1));
        topics.add(new NewTopic(prefix + "-keys", 8, (short) 1));
        Properties adminProps = new Properties();
        adminProps.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            admin.createTopics(topics).all().get();
            // Produce only once every partition has a leader: an idempotent
            // producer whose first batch meets NOT_LEADER_OR_FOLLOWER on a
            // topic this young can keep getting OUT_OF_ORDER_SEQUENCE_NUMBER
            // until its delivery timeout.
            List<String> names = topics.stream().map(NewTopic::name).toList();
            long deadline = System.currentTimeMillis() + 60_000;
            while (true) {
                boolean led = admin.describeTopics(names).allTopicNames().get().values().stream()
                        .allMatch(d -> d.partitions().stream().allMatch(p -> p.leader() != null && !p.leader().isEmpty()));
                if (led) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("topics without a leader after 60 s: " + names);
                }
                Thread.sleep(100);
            }
        }

        List<Sent> sent = new ArrayList<>();
        // Every codec, through an idempotent producer each.
        for (String codec : CODECS) {
            Properties p = producerProps(bootstrap);
            p.put("compression.type", codec);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < PER_CODEC; i++) {
                    // Repetitive values, so that every codec really compresses.
                    String value = ("value-" + i + "-").repeat(20);
                    send(producer, sent, new ProducerRecord<>(prefix + "-codec-" + codec, i % 2, null,
                            bytes("key-" + i), bytes(value)), false);
                }
                producer.flush();
            }
        }
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps(bootstrap))) {
            String shapes = prefix + "-shapes";
            // Explicit create times: recent, or the broker's time retention deletes them.
            long t = System.currentTimeMillis() - 60_000;
            // Headers: a repeated key, an empty value, a null value.
            List<Header> headers = List.of(
                    new RecordHeader("trace", bytes("a")),
                    new RecordHeader("trace", bytes("b")),
                    new RecordHeader("empty", new byte[0]),
                    new RecordHeader("null", null));
            send(producer, sent, new ProducerRecord<>(shapes, 0, t + 0, bytes("with-headers"),
                    bytes("v"), headers), false);
            // A null key, a null value (a tombstone), both null, an empty key and value.
            send(producer, sent, new ProducerRecord<>(shapes, 0, t + 1, (byte[]) null, bytes("no key")), false);
            send(producer, sent, new ProducerRecord<>(shapes, 1, t + 2, bytes("tombstone"), (byte[]) null), false);
            send(producer, sent, new ProducerRecord<>(shapes, 1, t + 3, (byte[]) null, (byte[]) null), false);
            send(producer, sent, new ProducerRecord<>(shapes, 1, t + 4, new byte[0], new byte[0]), false);
            // Log-append time: the broker sets the timestamp.
            for (int i = 0; i < 5; i++) {
                send(producer, sent, new ProducerRecord<>(prefix + "-log-append", 0, 1_000L,
                        bytes("append-" + i), bytes("v" + i)), false);
            }
            // A record close to the broker's size limit.
            byte[] big = new byte[BIG];
            for (int i = 0; i < big.length; i++) {
                big[i] = (byte) ('a' + i % 26);
            }
            send(producer, sent, new ProducerRecord<>(prefix + "-big", 0, bytes("big"), big), false);
            // The default (murmur2) partitioner on keyed records.
            for (int i = 0; i < KEYS; i++) {
                send(producer, sent, new ProducerRecord<>(prefix + "-keys", bytes("k" + i), bytes("v")), false);
            }
            producer.flush();
        }
        // Transactions: committed, aborted, committed.
        Properties tp = producerProps(bootstrap);
        tp.put("transactional.id", prefix + "-tx");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(tp)) {
            producer.initTransactions();
            String txn = prefix + "-txn";
            for (String outcome : new String[] {"committed", "aborted", "committed-again"}) {
                producer.beginTransaction();
                for (int i = 0; i < 10; i++) {
                    send(producer, sent, new ProducerRecord<>(txn, 0, bytes(outcome + "-" + i), bytes(outcome)),
                            outcome.equals("aborted"));
                }
                producer.flush();
                if (outcome.equals("aborted")) {
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
            }
        }
        for (Sent s : sent) {
            RecordMetadata md = s.result.get();
            ProducerRecord<byte[], byte[]> r = s.record;
            boolean logAppend = r.topic().endsWith("-log-append");
            System.out.println(line(md.topic(), md.partition(), md.offset(), r.key(), r.value(),
                    r.headers().toArray(), md.timestamp(), logAppend ? "log_append_time" : "create_time",
                    s.aborted));
        }
    }

    record Sent(ProducerRecord<byte[], byte[]> record, Future<RecordMetadata> result, boolean aborted) {}

    static void send(KafkaProducer<byte[], byte[]> producer, List<Sent> sent, ProducerRecord<byte[], byte[]> r,
            boolean aborted) {
        sent.add(new Sent(r, producer.send(r), aborted));
    }

    static void read(String bootstrap, String topic, int count, String isolation) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("isolation.level", isolation);
        p.put("enable.auto.commit", "false");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> parts = new ArrayList<>();
            consumer.partitionsFor(topic, Duration.ofSeconds(30))
                    .forEach(info -> parts.add(new TopicPartition(topic, info.partition())));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            int seen = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    System.out.println(line(r.topic(), r.partition(), r.offset(), r.key(), r.value(),
                            r.headers().toArray(), r.timestamp(),
                            r.timestampType().name.equals("LogAppendTime") ? "log_append_time" : "create_time",
                            false));
                    seen++;
                }
            }
            if (seen < count) {
                System.err.println("read " + seen + " of " + count + " records of " + topic + " within 60 s");
                System.exit(1);
            }
        }
    }

    static String b64(byte[] b) {
        return b == null ? "null" : "\"" + Base64.getEncoder().encodeToString(b) + "\"";
    }

    static String str(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static String line(String topic, int partition, long offset, byte[] key, byte[] value, Header[] headers,
            long timestamp, String timestampType, boolean aborted) {
        StringBuilder h = new StringBuilder("[");
        for (int i = 0; i < headers.length; i++) {
            if (i > 0) {
                h.append(',');
            }
            h.append('[').append(str(headers[i].key())).append(',').append(b64(headers[i].value())).append(']');
        }
        h.append(']');
        return "{\"topic\":" + str(topic) + ",\"partition\":" + partition + ",\"offset\":" + offset
                + ",\"key\":" + b64(key) + ",\"value\":" + b64(value) + ",\"headers\":" + h
                + ",\"timestamp\":" + timestamp + ",\"timestamp_type\":" + str(timestampType)
                + ",\"aborted\":" + aborted + "}";
    }
}
