package onebox.db;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.h2.mvstore.MVStore;
import org.h2.mvstore.MVStoreException;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;

/**
 * onebox's embedded database: a MongoDB wire-protocol server (mongo-java-server) on one H2 MVStore file.
 *
 * <p>What this launcher adds to the library, and why:
 * <ul>
 *   <li><b>Durability</b> ({@link OneboxBackend}): every write is committed before it is answered.</li>
 *   <li><b>Indexes that are used</b> ({@link OneboxDatabase}, {@link SortedIndex}, {@link QueryPlan}): the
 *   library ignores non-unique indexes and scans whole collections; onebox's list, claim and reaper queries
 *   need ranges of compound indexes walked in order.</li>
 *   <li><b>Wire version.</b> The library reports MongoDB 5.0's wire version by default, or older; pymongo 4.20
 *   needs at least 9. We report MongoDB 4.4 (wire version 9): the oldest server pymongo accepts, so the driver
 *   asks for no feature this server lacks.</li>
 *   <li><b>Ownership.</b> With {@code --parent-stdin} the server exits when its standard input reaches end of file:
 *   onebox keeps the write end of that pipe, so however onebox ends (Ctrl-C, SIGKILL, a crash) the database
 *   ends with it and no orphan is left to hold the port and the file lock.</li>
 * </ul>
 */
public final class Main {

    public static void main(String[] args) throws Exception {
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("onebox-db: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(2);
            return;
        }

        MVStore store;
        try {
            store = new MVStore.Builder().fileName(options.file).cacheSize(options.cacheMb).open();
        } catch (MVStoreException e) {
            System.err.println("onebox-db: cannot open " + options.file + ": " + e.getMessage()
                + " (is another onebox database using it?)");
            System.exit(3);
            return;
        }
        // Space of superseded chunks may be reused once they are surely on disk: we fsync every fsyncMs, so a few
        // times that is enough (MVStore's 45 s default lets a busy file grow by 45 s worth of commits).
        store.setRetentionTime((int) Math.min(Integer.MAX_VALUE, 5 * options.fsyncMs));

        OneboxBackend backend = new OneboxBackend(store, options.commitEachWrite);
        backend.version(new ReportedVersion(List.of(4, 4, 0), 9));
        MongoServer server = new MongoServer(backend);
        try {
            server.bind(new InetSocketAddress(options.host, options.port));
        } catch (RuntimeException e) {
            System.err.println("onebox-db: cannot listen on " + options.host + ":" + options.port + ": " + e);
            backend.close();
            System.exit(4);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean closing = new AtomicBoolean();
        ScheduledExecutorService syncer = Executors.newSingleThreadScheduledExecutor(runnable -> {
            Thread thread = new Thread(runnable, "onebox-db-fsync");
            thread.setDaemon(true);
            return thread;
        });
        syncer.scheduleWithFixedDelay(backend::sync, options.fsyncMs, options.fsyncMs, TimeUnit.MILLISECONDS);

        Runnable shutdown = () -> {
            if (!closing.compareAndSet(false, true)) {
                return;
            }
            syncer.shutdownNow();
            server.shutdownNow();
            backend.close(); // commits and closes the file cleanly
            System.err.println("onebox-db: stopped (" + backend.commits.get() + " commits)");
            stopped.countDown();
        };
        Runtime.getRuntime().addShutdownHook(new Thread(shutdown, "onebox-db-shutdown"));
        if (options.parentStdin) {
            Thread watcher = new Thread(() -> {
                drain(System.in);
                System.err.println("onebox-db: the process that started us is gone; stopping");
                System.exit(0); // runs the shutdown hook
            }, "onebox-db-parent-watch");
            watcher.setDaemon(true);
            watcher.start();
        }
        System.err.println("onebox-db: listening on " + options.host + ":" + options.port + ", data in "
            + options.file + ", cache " + options.cacheMb + " MB, "
            + (options.commitEachWrite ? "each write committed before its answer" : "commits in the background"));
        stopped.await();
    }

    /** Read until end of file (or error): the parent closed its end of our standard input. */
    private static void drain(InputStream in) {
        byte[] buffer = new byte[256];
        try {
            while (in.read(buffer) >= 0) {
                // ignore whatever is written; only the end matters
            }
        } catch (IOException ignored) {
            // a broken pipe means the same thing as end of file
        }
    }

    /** The server version reported to drivers. */
    record ReportedVersion(List<Integer> versionArray, int wireVersion) implements MongoVersion {
        @Override
        public List<Integer> getVersionArray() {
            return versionArray;
        }

        @Override
        public int getWireVersion() {
            return wireVersion;
        }
    }

    /** Command-line options. */
    record Options(String host, int port, String file, int cacheMb, long fsyncMs, boolean parentStdin,
                   boolean commitEachWrite) {

        static final String USAGE = "usage: onebox-db --listen HOST:PORT --file PATH [--cache-mb N] [--fsync-ms N]"
            + " [--parent-stdin] [--commit-in-background]";

        static Options parse(String[] args) {
            String listen = null;
            String file = null;
            int cacheMb = 256;
            long fsyncMs = 1000;
            boolean parentStdin = false;
            boolean commitEachWrite = true;
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--listen" -> listen = value(args, ++i, "--listen");
                    case "--file" -> file = value(args, ++i, "--file");
                    case "--cache-mb" -> cacheMb = Integer.parseInt(value(args, ++i, "--cache-mb"));
                    case "--fsync-ms" -> fsyncMs = Long.parseLong(value(args, ++i, "--fsync-ms"));
                    case "--parent-stdin" -> parentStdin = true;
                    case "--commit-in-background" -> commitEachWrite = false;
                    default -> throw new IllegalArgumentException("unknown option " + args[i]);
                }
            }
            if (listen == null || file == null) {
                throw new IllegalArgumentException("--listen and --file are required");
            }
            int colon = listen.lastIndexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("--listen takes HOST:PORT");
            }
            if (cacheMb < 1 || fsyncMs < 1) {
                throw new IllegalArgumentException("--cache-mb and --fsync-ms must be positive");
            }
            return new Options(listen.substring(0, colon), Integer.parseInt(listen.substring(colon + 1)), file,
                cacheMb, fsyncMs, parentStdin, commitEachWrite);
        }

        private static String value(String[] args, int i, String name) {
            if (i >= args.length) {
                throw new IllegalArgumentException(name + " needs a value");
            }
            return args[i];
        }
    }

    private Main() {
    }
}
