package onebox.db;

import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.NavigableSet;
import java.util.concurrent.ConcurrentSkipListSet;

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.Missing;
import de.bwaldvogel.mongo.backend.Utils;
import de.bwaldvogel.mongo.bson.Document;

/**
 * A non-unique (compound) index, kept in memory and rebuilt from the documents when the server starts.
 *
 * <p>mongo-java-server accepts non-unique indexes and ignores them, so every query that is not an exact match
 * on a unique index reads the whole collection. This index keeps one entry per document, ordered by the index's
 * keys (each in its own direction) and then by the document's position ({@code _id}), so that
 * {@link OneboxCollection} can walk a range of it in order and stop after {@code limit} matches. Entries hold
 * only the key values and the position; the documents stay in the MVStore.
 *
 * <p>A document with an array under an indexed path makes the index "multikey"; the planner then no longer uses
 * it (an array stands for several keys, which this index does not model), and queries fall back to a scan.
 */
final class SortedIndex extends Index<Object> {

    /** One index entry: the document's key values (nulls for missing fields) and its position. */
    record Entry(Object[] values, Object position) {
    }

    private final NavigableSet<Entry> entries;
    private final Comparator<Entry> order;
    private volatile boolean multikey;

    SortedIndex(String name, List<IndexKey> keys, boolean sparse) {
        super(name, keys, sparse);
        this.order = entryOrder(keys);
        this.entries = new ConcurrentSkipListSet<>(order);
    }

    private static Comparator<Entry> entryOrder(List<IndexKey> keys) {
        int n = keys.size();
        boolean[] ascending = new boolean[n];
        for (int i = 0; i < n; i++) {
            ascending[i] = keys.get(i).isAscending();
        }
        return (a, b) -> {
            for (int i = 0; i < n; i++) {
                int c = Bounds.compareKey(a.values[i], b.values[i], ascending[i]);
                if (c != 0) {
                    return c;
                }
            }
            return Bounds.compareKey(a.position, b.position, true);
        };
    }

    Entry entryOf(Document document, Object position) {
        List<IndexKey> keys = getKeys();
        Object[] values = new Object[keys.size()];
        for (int i = 0; i < values.length; i++) {
            Object value = Utils.getSubdocumentValueCollectionAware(document, keys.get(i).getKey());
            if (value instanceof Collection) {
                multikey = true;
            }
            values[i] = Missing.isNullOrMissing(value) ? null : value;
        }
        return new Entry(values, position);
    }

    /** The position a document has in the H2 backend: its {@code _id} (the key of the collection's data map). */
    static Object positionOf(Document document) {
        return document.get("_id");
    }

    boolean isMultikey() {
        return multikey;
    }

    /** Entries between two probes (inclusive), in index order or reversed. */
    Iterable<Entry> range(Entry first, Entry last, boolean reverse) {
        if (order.compare(first, last) > 0) {
            return List.of(); // an empty range ({$gte: 5, $lte: 1}): nothing matches
        }
        NavigableSet<Entry> slice = entries.subSet(first, true, last, true);
        return reverse ? slice.descendingSet() : slice;
    }

    @Override
    public Object getPosition(Document document) {
        return null; // the unique _id index answers where a document is; several documents share our keys
    }

    @Override
    public void checkAdd(Document document, MongoCollection<Object> collection) {
        // not unique: nothing to refuse
    }

    @Override
    public void add(Document document, Object position, MongoCollection<Object> collection) {
        entries.add(entryOf(document, position));
    }

    @Override
    public Object remove(Document document) {
        Object position = positionOf(document);
        entries.remove(entryOf(document, position));
        return position;
    }

    @Override
    public boolean canHandle(Document query) {
        return false; // OneboxCollection plans with this index itself (ranges, order, limits)
    }

    @Override
    public Iterable<Object> getPositions(Document query) {
        throw new UnsupportedOperationException("planned by OneboxCollection");
    }

    @Override
    public long getCount() {
        return entries.size();
    }

    @Override
    public long getDataSize() {
        return 0;
    }

    @Override
    public void checkUpdate(Document oldDocument, Document newDocument, MongoCollection<Object> collection) {
        // not unique: nothing to refuse
    }

    @Override
    public void updateInPlace(Document oldDocument, Document newDocument, Object position,
                              MongoCollection<Object> collection) {
        Entry before = entryOf(oldDocument, position);
        Entry after = entryOf(newDocument, position);
        if (order.compare(before, after) != 0) {
            entries.remove(before);
            entries.add(after);
        }
    }

    @Override
    public void drop() {
        entries.clear();
    }
}
