package onebox.db;

import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;

import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;

/**
 * How one query can use one {@link SortedIndex}: which keys it pins by equality, the range on the next key,
 * and whether walking the index yields the documents already in the order the query asks for.
 *
 * <p>The same rules as MongoDB's bounds for a compound index: a prefix of the keys fixed by equality on plain
 * values, then at most one key bounded by {@code $gt/$gte/$lt/$lte} (within one BSON type), and the sort served
 * when its keys, after dropping those fixed by equality, are the index's next keys all in the index's direction
 * or all reversed. Everything else in the query ({@code $ne}, {@code $or}, further keys) is checked on each
 * document the walk visits, so a plan never changes a query's answer, only how many documents are read.
 */
final class QueryPlan {

    private static final Set<String> RANGE_OPERATORS = Set.of("$gt", "$gte", "$lt", "$lte");

    final SortedIndex index;
    final int equalities; // how many leading keys are fixed by equality
    final boolean ranged; // the next key is bounded
    final boolean sorted; // the walk yields the query's order
    final boolean reverse; // walk the index backwards
    private final SortedIndex.Entry first;
    private final SortedIndex.Entry last;

    private QueryPlan(SortedIndex index, int equalities, boolean ranged, boolean sorted, boolean reverse,
                      SortedIndex.Entry first, SortedIndex.Entry last) {
        this.index = index;
        this.equalities = equalities;
        this.ranged = ranged;
        this.sorted = sorted;
        this.reverse = reverse;
        this.first = first;
        this.last = last;
    }

    /** Higher is better: every fixed key narrows the walk most, a range next, a served sort last. */
    int score(boolean sortRequested) {
        return equalities * 4 + (ranged ? 2 : 0) + (sorted && sortRequested ? 1 : 0);
    }

    Iterable<SortedIndex.Entry> walk() {
        return index.range(first, last, reverse);
    }

    /** The plan for this query on this index, or null when the index would not help. */
    static QueryPlan of(SortedIndex index, Document query, Document orderBy, int limit) {
        if (index.isMultikey() || query.containsKey("$where") || query.containsKey("$text")) {
            return null;
        }
        List<IndexKey> keys = index.getKeys();
        int n = keys.size();
        Object[] low = new Object[n];
        Object[] high = new Object[n];
        int equalities = 0;
        while (equalities < n) {
            Object value = equalityValue(query.get(keys.get(equalities).getKey()), query, keys.get(equalities).getKey());
            if (value == NOT_EQUALITY) {
                break;
            }
            low[equalities] = value;
            high[equalities] = value;
            equalities++;
        }
        boolean ranged = false;
        int next = equalities;
        if (next < n) {
            Object[] range = rangeOf(query.get(keys.get(next).getKey()));
            if (range != null) {
                boolean ascending = keys.get(next).isAscending();
                low[next] = ascending ? range[0] : range[1];
                high[next] = ascending ? range[1] : range[0];
                ranged = true;
                next++;
            }
        }
        for (int i = next; i < n; i++) {
            low[i] = Bounds.LOW;
            high[i] = Bounds.HIGH;
        }

        boolean sortRequested = orderBy != null && !orderBy.isEmpty() && !orderBy.containsKey("$natural");
        boolean sorted = !sortRequested;
        boolean reverse = false;
        if (sortRequested) {
            Boolean direction = servedDirection(keys, equalities, orderBy);
            if (direction != null) {
                sorted = true;
                reverse = direction;
            }
        }
        if (equalities == 0 && !ranged && !(sortRequested && sorted && limit > 0)) {
            return null; // it would read every entry anyway, in no useful order
        }
        return new QueryPlan(index, equalities, ranged, sorted, reverse,
            new SortedIndex.Entry(low, Bounds.LOW), new SortedIndex.Entry(high, Bounds.HIGH));
    }

    private static final Object NOT_EQUALITY = new Object();

    /** A plain scalar the field must equal ({@code x} or {@code {$eq: x}}); NOT_EQUALITY otherwise. */
    private static Object equalityValue(Object condition, Document query, String key) {
        if (!query.containsKey(key)) {
            return NOT_EQUALITY;
        }
        if (condition instanceof Document document) {
            if (document.size() == 1 && document.containsKey("$eq")) {
                condition = document.get("$eq");
            } else {
                return NOT_EQUALITY;
            }
        }
        // Only scalars: an equality on an array or a document also matches array members, which the index
        // (a key per document) cannot express.
        if (condition == null || condition instanceof String || condition instanceof Number
            || condition instanceof Boolean || condition instanceof Instant || condition instanceof ObjectId) {
            return condition;
        }
        return NOT_EQUALITY;
    }

    /**
     * {lowest, highest} in value order for a condition made only of range operators on values of one type;
     * a missing side is the edge of that type (MongoDB compares only within a type); null when not a range.
     */
    private static Object[] rangeOf(Object condition) {
        if (!(condition instanceof Document document) || document.isEmpty()) {
            return null;
        }
        Object lowest = null;
        Object highest = null;
        int type = -1;
        for (Map.Entry<String, Object> entry : document.entrySet()) {
            if (!RANGE_OPERATORS.contains(entry.getKey())) {
                return null;
            }
            Object value = entry.getValue();
            if (value == null || value instanceof Document || value instanceof List) {
                return null;
            }
            int valueType = Bounds.typeOf(value);
            if (type >= 0 && valueType != type) {
                return null;
            }
            type = valueType;
            // Exclusive bounds are included here and excluded by the query check on each document.
            if (entry.getKey().startsWith("$g")) {
                lowest = lowest == null || Bounds.compareKey(value, lowest, true) > 0 ? value : lowest;
            } else {
                highest = highest == null || Bounds.compareKey(value, highest, true) < 0 ? value : highest;
            }
        }
        return new Object[] {
            lowest != null ? lowest : new Bounds.Bracket(type, true),
            highest != null ? highest : new Bounds.Bracket(type, false),
        };
    }

    /**
     * Whether walking the index serves {@code orderBy}: null if not, FALSE forwards, TRUE backwards. Keys fixed
     * by equality may appear anywhere in the sort (all their values are equal).
     */
    private static Boolean servedDirection(List<IndexKey> keys, int equalities, Document orderBy) {
        List<String> fixed = new ArrayList<>();
        for (int i = 0; i < equalities; i++) {
            fixed.add(keys.get(i).getKey());
        }
        int position = equalities;
        Boolean reverse = null;
        for (Map.Entry<String, Object> entry : orderBy.entrySet()) {
            if (fixed.contains(entry.getKey())) {
                continue;
            }
            boolean wantAscending = !(entry.getValue() instanceof Number number) || number.doubleValue() >= 0;
            boolean keyAscending;
            if (position < keys.size() && keys.get(position).getKey().equals(entry.getKey())) {
                keyAscending = keys.get(position).isAscending();
            } else if (position == keys.size() && entry.getKey().equals("_id")) {
                keyAscending = true; // entries with equal keys are ordered by position, which is the _id, ascending
            } else {
                return null;
            }
            boolean backwards = wantAscending != keyAscending;
            if (reverse != null && reverse != backwards) {
                return null;
            }
            reverse = backwards;
            position++;
        }
        return reverse == null ? Boolean.FALSE : reverse;
    }

    @Override
    public String toString() {
        return "IXSCAN " + index.getName() + " " + index.getKeys() + " equalities=" + equalities + " ranged=" + ranged
            + " sorted=" + sorted + (reverse ? " backwards" : "") + " first=" + Arrays.toString(first.values())
            + " last=" + Arrays.toString(last.values());
    }
}
