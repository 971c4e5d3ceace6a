package onebox.db;

import java.time.Instant;
import java.util.Collection;
import java.util.UUID;

import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.bson.BinData;
import de.bwaldvogel.mongo.bson.BsonRegularExpression;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;

/**
 * How index keys compare, including the probes that bound a walk of an index.
 *
 * <p>Real values compare as MongoDB orders them ({@link ValueComparator}: null, numbers, strings, documents,
 * arrays, binary, ids, booleans, dates, ...), in the key's direction. Two kinds of probe stand for no real value:
 * {@link #LOW}/{@link #HIGH} sort before/after every value in index order, whatever the key's direction (they
 * open a range on keys the query does not bound); a {@link Bracket} sorts just before or just after every value
 * of one BSON type, which is how MongoDB bounds a one-sided range ({@code {$lte: date}} never matches a null or
 * a string, so a walk for it starts at the first date).
 */
final class Bounds {

    /** Sorts before everything, in index order. */
    static final Object LOW = new Object() {
        @Override
        public String toString() {
            return "LOW";
        }
    };

    /** Sorts after everything, in index order. */
    static final Object HIGH = new Object() {
        @Override
        public String toString() {
            return "HIGH";
        }
    };

    /** The edge of one BSON type's values: {@code start} before the first, otherwise after the last. */
    record Bracket(int type, boolean start) {
    }

    private static final ValueComparator VALUES = ValueComparator.asc();

    /** MongoDB's order of BSON types (as in ValueComparator), with null and missing first. */
    static int typeOf(Object value) {
        if (value == null) {
            return 0;
        } else if (value instanceof Number) {
            return 1;
        } else if (value instanceof String) {
            return 2;
        } else if (value instanceof Document) {
            return 3;
        } else if (value instanceof Collection) {
            return 4;
        } else if (value instanceof BinData) {
            return 5;
        } else if (value instanceof UUID) {
            return 6;
        } else if (value instanceof ObjectId) {
            return 7;
        } else if (value instanceof Boolean) {
            return 8;
        } else if (value instanceof Instant) {
            return 9;
        } else if (value instanceof BsonTimestamp) {
            return 10;
        } else if (value instanceof BsonRegularExpression) {
            return 11;
        }
        return 12;
    }

    /** Compare two key values (or probes) in index order for a key of the given direction. */
    static int compareKey(Object a, Object b, boolean ascending) {
        if (a == b) {
            return 0;
        }
        if (a == LOW || b == HIGH) {
            return -1;
        }
        if (a == HIGH || b == LOW) {
            return 1;
        }
        int c = compareValues(a, b);
        return ascending ? c : -c;
    }

    private static int compareValues(Object a, Object b) {
        if (a instanceof Bracket bracket) {
            return compareBracket(bracket, b);
        }
        if (b instanceof Bracket bracket) {
            return -compareBracket(bracket, a);
        }
        return VALUES.compare(a, b);
    }

    private static int compareBracket(Bracket bracket, Object value) {
        if (value instanceof Bracket other) {
            int c = Integer.compare(bracket.type(), other.type());
            return c != 0 ? c : Boolean.compare(!bracket.start(), !other.start());
        }
        int c = Integer.compare(bracket.type(), typeOf(value));
        if (c != 0) {
            return c;
        }
        return bracket.start() ? -1 : 1;
    }

    private Bounds() {
    }
}
