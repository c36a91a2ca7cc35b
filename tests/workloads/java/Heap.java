// Heap: a small multi-threaded JVM program that checks its own heap and threads.
// Usage: java -XX:-UsePerfData -cp DIR Heap   (protocol of wl.h: READY <pid>; on SIGUSR1
// the main thread checks and prints PASS <n> or FAIL <reason>)
//
// Setup: 8 MiB of longs with a pattern, a HashMap of 10000 entries, and 4 worker threads,
// each adding to its own counter and to a shared AtomicLong, and sleeping in between.
// Check: the array still holds its pattern, the map its entries, every worker is alive
// and its counter moved since the last check, and the shared total equals the sum of
// the workers' counters (read under the same lock the workers take).
import java.util.HashMap;
import java.util.concurrent.atomic.AtomicLong;

public class Heap {
    static final long[] data = new long[1 << 20];
    static final HashMap<Integer, String> map = new HashMap<>();
    static final Object lock = new Object();
    static final long[] counts = new long[4];
    static long total = 0;
    static final AtomicLong checks = new AtomicLong();
    static volatile boolean checkRequested = false;

    static String verify(long[] before, Thread[] workers) throws InterruptedException {
        for (int i = 0; i < data.length; i++) {
            if (data[i] != i * 0x9E3779B97F4A7C15L) {
                return "heap word " + i + " is " + data[i];
            }
        }
        for (int i = 0; i < 10000; i++) {
            if (!("v" + i * 7).equals(map.get(i))) {
                return "map entry " + i + " is " + map.get(i);
            }
        }
        Thread.sleep(200);
        synchronized (lock) {
            long sum = 0;
            for (int t = 0; t < counts.length; t++) {
                if (!workers[t].isAlive()) {
                    return "worker " + t + " is not alive";
                }
                if (counts[t] <= before[t]) {
                    return "worker " + t + " did not move (" + counts[t] + ")";
                }
                before[t] = counts[t];
                sum += counts[t];
            }
            if (sum != total) {
                return "total " + total + " != sum of the workers' " + sum;
            }
        }
        return null;
    }

    public static void main(String[] args) throws Exception {
        for (int i = 0; i < data.length; i++) {
            data[i] = i * 0x9E3779B97F4A7C15L;
        }
        for (int i = 0; i < 10000; i++) {
            map.put(i, "v" + i * 7);
        }
        Thread[] workers = new Thread[counts.length];
        for (int t = 0; t < workers.length; t++) {
            final int me = t;
            workers[t] = new Thread(() -> {
                while (true) {
                    synchronized (lock) {
                        counts[me]++;
                        total++;
                    }
                    try {
                        Thread.sleep(5);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            workers[t].start();
        }
        sun.misc.Signal.handle(new sun.misc.Signal("USR1"), s -> checkRequested = true);
        long[] before = new long[counts.length];
        System.out.println("READY " + ProcessHandle.current().pid());
        System.out.flush();
        while (true) {
            if (checkRequested) {
                checkRequested = false;
                String bad = verify(before, workers);
                if (bad == null) {
                    System.out.println("PASS " + checks.incrementAndGet());
                } else {
                    System.out.println("FAIL " + bad);
                }
                System.out.flush();
            }
            Thread.sleep(10);
        }
    }
}
