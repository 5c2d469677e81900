// The Java baselines of the throughput benchmark: Kafka's own
// ConsumerPerformance and ProducerPerformance tools (org.apache.kafka:kafka-tools),
// each run twice in one JVM so that the second pass is JIT-warmed.
//
//   scripts/kafka-local java benches/java/JavaPerf.java consumer SERVERS TOPIC RECORDS
//   scripts/kafka-local java benches/java/JavaPerf.java producer SERVERS TOPIC1,TOPIC2 RECORDS SIZE
//
// Prints one line: `pass1=RECORDS_PER_S pass2=RECORDS_PER_S peak_rss_mb=MB`
// (the JVM's VmHWM). The consumer's rate is the tool's fetch.nMsg.sec (group join excluded, as in the Rust
// cases, whose clock starts at the first record); the producer's is the
// tool's records/sec over the whole run, acknowledgements included.

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.UUID;

public class JavaPerf {
    public static void main(String[] args) throws Exception {
        String tool = args[0];
        String servers = args[1];
        double[] rates = new double[2];
        for (int pass = 0; pass < 2; pass++) {
            String out;
            if (tool.equals("consumer")) {
                out = captured(() -> org.apache.kafka.tools.ConsumerPerformance.main(new String[] {
                    "--bootstrap-server", servers,
                    "--topic", args[2],
                    "--messages", args[3],
                    "--group", "java-perf-" + UUID.randomUUID(),
                    "--timeout", "60000",
                }));
                rates[pass] = consumerRate(out);
            } else {
                String topic = args[2].split(",")[pass];
                out = captured(() -> org.apache.kafka.tools.ProducerPerformance.main(new String[] {
                    "--topic", topic,
                    "--num-records", args[3],
                    "--record-size", args[4],
                    "--throughput", "-1",
                    "--producer-props", "bootstrap.servers=" + servers, "acks=all",
                    "enable.idempotence=true", "linger.ms=5",
                }));
                rates[pass] = producerRate(out);
            }
        }
        System.out.println("pass1=" + rates[0] + " pass2=" + rates[1] + " peak_rss_mb=" + peakRssMb());
    }

    // The JVM's peak RSS (VmHWM of /proc/self/status), in MB.
    static double peakRssMb() throws Exception {
        for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Double.parseDouble(line.split("\\s+")[1]) / 1024.0;
            }
        }
        return 0;
    }

    interface Body {
        void run() throws Exception;
    }

    // What `body` printed on standard output.
    static String captured(Body body) throws Exception {
        PrintStream original = System.out;
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buffer, true, StandardCharsets.UTF_8));
        try {
            body.run();
        } finally {
            System.setOut(original);
        }
        return buffer.toString(StandardCharsets.UTF_8);
    }

    // The last column (fetch.nMsg.sec) of the tool's last line.
    static double consumerRate(String out) {
        String[] lines = out.strip().split("\n");
        String[] fields = lines[lines.length - 1].split(",");
        try {
            return Double.parseDouble(fields[fields.length - 1].strip());
        } catch (NumberFormatException e) {
            throw new IllegalStateException("unexpected ConsumerPerformance output: " + out);
        }
    }

    // The records/sec of the tool's summary, its last "N records sent, R
    // records/sec (...)" line (the lines before it report progress).
    static double producerRate(String out) {
        String summary = null;
        for (String line : out.split("\n")) {
            if (line.contains(" records sent, ")) {
                summary = line;
            }
        }
        if (summary == null) {
            throw new IllegalStateException("unexpected ProducerPerformance output: " + out);
        }
        String rate = summary.split(" records sent, ")[1].split(" records/sec")[0];
        return Double.parseDouble(rate.strip());
    }
}
