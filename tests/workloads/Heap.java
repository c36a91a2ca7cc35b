// Heap: a multi-threaded JVM program that checks its own heap (protocol of wl.h).
// Usage: java -cp CLASSDIR Heap WORKDIR
// Four workers each own an array and a map and bump a shared total under one lock; every
// update keeps invariants the check recomputes: each array holds gen*i+id at every index,
// each map holds gen entries k -> id*k, and the per-thread counts add up to the total.
// SIGUSR1: check, print "PASS n" or "FAIL reason" (also FAIL if the workers stopped
// making progress). SIGTERM: corrupt one array, check (must FAIL), exit 1.
// (HotSpot keeps SIGUSR2 for itself, so there is no check-and-exit signal here.)
import java.util.HashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import sun.misc.Signal;

public class Heap {
    static final int WORKERS = 4, LEN = 1 << 16;
    static final Object lock = new Object();
    static final long[][] arrays = new long[WORKERS][LEN];
    static final long[] gens = new long[WORKERS];
    @SuppressWarnings("unchecked")
    static final HashMap<Long, Long>[] maps = new HashMap[WORKERS];
    static long total = 0;
    static final AtomicBoolean check = new AtomicBoolean(), corrupt = new AtomicBoolean();

    static void step(int id) {
        synchronized (lock) {
            long g = ++gens[id];
            long[] a = arrays[id];
            for (int i = 0; i < LEN; i++) a[i] = g * i + id;
            maps[id].put(g, id * g);
            total++;
        }
    }

    static String verify() {
        synchronized (lock) {
            long sum = 0;
            for (int id = 0; id < WORKERS; id++) {
                long g = gens[id];
                sum += g;
                long[] a = arrays[id];
                for (int i = 0; i < LEN; i++)
                    if (a[i] != g * i + id)
                        return "worker " + id + " array[" + i + "] = " + a[i] + ", want " + (g * i + id);
                if (maps[id].size() != g)
                    return "worker " + id + " map has " + maps[id].size() + " entries, want " + g;
                for (long k = 1; k <= g; k++) {
                    Long v = maps[id].get(k);
                    if (v == null || v != id * k)
                        return "worker " + id + " map[" + k + "] = " + v;
                }
            }
            if (sum != total) return "counts add up to " + sum + ", total is " + total;
        }
        return null;
    }

    static long totalNow() {
        synchronized (lock) {
            return total;
        }
    }

    public static void main(String[] args) throws Exception {
        for (int id = 0; id < WORKERS; id++) maps[id] = new HashMap<>();
        Signal.handle(new Signal("USR1"), s -> check.set(true));
        Signal.handle(new Signal("TERM"), s -> { corrupt.set(true); check.set(true); });
        for (int id = 0; id < WORKERS; id++) {
            final int me = id;
            Thread t = new Thread(() -> {
                while (true) {
                    step(me);
                    try { Thread.sleep(5); } catch (InterruptedException e) { return; }
                }
            }, "worker-" + id);
            t.setDaemon(true);
            t.start();
        }
        System.out.println("READY " + ProcessHandle.current().pid());
        int passes = 0;
        while (true) {
            Thread.sleep(10);
            if (!check.getAndSet(false)) continue;
            boolean dying = corrupt.get();
            if (dying) synchronized (lock) { arrays[2][77] ^= 1; }
            String why = verify();
            if (why == null) {
                // The workers must still be running: the total moves on.
                long before = totalNow();
                long until = System.nanoTime() + 10_000_000_000L;
                while (totalNow() == before && System.nanoTime() < until) Thread.sleep(5);
                if (totalNow() == before) why = "the workers made no progress in 10 s";
            }
            if (why == null) System.out.println("PASS " + (++passes));
            else System.out.println("FAIL " + why);
            if (dying) System.exit(why == null ? 0 : 1);
        }
    }
}
