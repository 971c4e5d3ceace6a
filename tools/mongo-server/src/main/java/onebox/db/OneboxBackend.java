package onebox.db;

import java.util.Locale;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.bson.Document;
import io.netty.channel.Channel;

/**
 * The H2 backend as onebox runs it: every write committed before it is answered, indexes that are used
 * ({@link OneboxDatabase}), and {@code explain} answered with the plan a query gets.
 *
 * <p>The library leaves commits to MVStore's background thread (about once a second), so a crash loses the
 * last second of acknowledged writes. Here every write command commits before its answer leaves: an
 * acknowledged write is in the data file (at least in the OS's page cache), so it survives a crash of this
 * process or of onebox. Concurrent writers share commits: a commit stores everything written so far, and the
 * next writer's commit then finds little or nothing left to store. {@link #sync()}, called every second,
 * bounds what a power loss can take.
 */
final class OneboxBackend extends H2Backend {

    /** Commands that change data: each is committed before its answer leaves. */
    private static final Set<String> WRITE_COMMANDS = Set.of(
        "insert", "update", "delete", "findandmodify", "createindexes", "dropindexes", "drop", "dropdatabase",
        "create", "renamecollection");

    final AtomicLong commits = new AtomicLong();
    private final MVStore store;
    private final boolean commitEachWrite;

    OneboxBackend(MVStore store, boolean commitEachWrite) {
        super(store);
        this.store = store;
        this.commitEachWrite = commitEachWrite;
    }

    // Also called from H2Backend's constructor (to open the databases already in the file), before this class's
    // fields are set: hence getMvStore(), which the superclass sets first.
    @Override
    protected MongoDatabase openOrCreateDatabase(String databaseName) {
        return new OneboxDatabase(databaseName, getMvStore(), getCursorRegistry());
    }

    @Override
    public Document handleCommand(Channel channel, String database, String command, Document query) {
        if (command.equalsIgnoreCase("explain")) {
            return explain(database, query);
        }
        boolean write = commitEachWrite && WRITE_COMMANDS.contains(command.toLowerCase(Locale.ROOT));
        try {
            return super.handleCommand(channel, database, command, query);
        } finally {
            if (write) {
                // Also after a failed command: an unordered insert that hit a duplicate key wrote the others.
                commitNow();
            }
        }
    }

    void commitNow() {
        if (store.hasUnsavedChanges()) {
            store.commit();
            commits.incrementAndGet();
        }
    }

    void sync() {
        try {
            commitNow();
            store.sync();
        } catch (RuntimeException e) {
            System.err.println("onebox-db: commit/fsync failed: " + e);
        }
    }

    /** {@code explain} of a find: the plan {@link OneboxCollection} would choose, in MongoDB's answer shape. */
    private Document explain(String databaseName, Document query) {
        Document find = (Document) query.get("explain");
        String collectionName = (String) find.get("find");
        Document filter = find.get("filter") instanceof Document d ? d : new Document();
        Document sort = find.get("sort") instanceof Document d ? d : null;
        int limit = find.get("limit") instanceof Number number ? number.intValue() : 0;
        MongoCollection<?> collection = resolveDatabase(databaseName).resolveCollection(collectionName, false);
        String plan = collection instanceof OneboxCollection onebox
            ? onebox.describePlan(filter, sort, limit) : "EOF (no such collection)";
        String stage = plan.startsWith("IXSCAN") ? "IXSCAN" : plan.startsWith("COLLSCAN") ? "COLLSCAN" : plan;
        Document winning = new Document("stage", stage).append("plan", plan);
        Document planner = new Document("namespace", databaseName + "." + collectionName)
            .append("parsedQuery", filter).append("winningPlan", winning);
        return new Document("queryPlanner", planner).append("ok", 1.0);
    }
}
