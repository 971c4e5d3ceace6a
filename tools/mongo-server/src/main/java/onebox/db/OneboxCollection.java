package onebox.db;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import org.h2.mvstore.MVMap;

import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.h2.H2Collection;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;

/**
 * An H2 collection whose queries use indexes the way a MongoDB server would, as far as onebox needs.
 *
 * <p>Every read, update, delete, count and findAndModify of the library goes through {@link #queryDocuments}.
 * Here it picks, in order: a direct read by {@code _id} (equality or {@code $in} on string or ObjectId ids, with
 * any further conditions checked on the document); an exact match on a unique index (the library's own path);
 * the best {@link QueryPlan} over the {@link SortedIndex}es; and only then a scan of the whole collection. With a
 * plan that serves the sort, the walk stops after {@code skip + limit} matching documents.
 */
final class OneboxCollection extends H2Collection {

    OneboxCollection(MongoDatabase database, String collectionName, CollectionOptions options,
                     MVMap<Object, Document> dataMap, MVMap<String, Object> metaMap, CursorRegistry cursorRegistry) {
        super(database, collectionName, options, dataMap, metaMap, cursorRegistry);
    }

    @Override
    protected QueryResult queryDocuments(Document query, Document orderBy, int numberToSkip, int limit, int batchSize,
                                         Document fieldSelector) {
        List<Object> ids = idsOf(query.get("_id"));
        if (ids != null) {
            List<Document> found = new ArrayList<>(ids.size());
            for (Object id : ids) {
                Document document = getDocument(id);
                if (document != null) {
                    found.add(document);
                }
            }
            return matchDocumentsFromStream(found.stream(), query, orderBy, numberToSkip, limit, batchSize,
                fieldSelector);
        }

        QueryPlan best = null;
        boolean sortRequested = orderBy != null && !orderBy.isEmpty();
        for (Index<Object> index : getIndexes()) {
            if (index.canHandle(query)) {
                return super.queryDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
            }
            if (index instanceof SortedIndex sorted) {
                QueryPlan plan = QueryPlan.of(sorted, query, orderBy, limit);
                if (plan != null && (best == null || plan.score(sortRequested) > best.score(sortRequested))) {
                    best = plan;
                }
            }
        }
        if (best == null) {
            return super.queryDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
        }

        long wanted = best.sorted && limit > 0 ? (long) numberToSkip + limit : Long.MAX_VALUE;
        List<Document> found = new ArrayList<>();
        for (SortedIndex.Entry entry : best.walk()) {
            Document document = getDocument(entry.position());
            if (document != null && documentMatchesQuery(document, query)) {
                found.add(document);
                if (found.size() >= wanted) {
                    break;
                }
            }
        }
        return matchDocumentsFromStream(found.stream(), query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
    }

    /** The ids a query names outright ({@code _id: x} or {@code _id: {$in: [...]}}), or null. */
    private static List<Object> idsOf(Object condition) {
        if (isPlainId(condition)) {
            return List.of(condition);
        }
        if (condition instanceof Document document && document.size() == 1) {
            Object value = document.containsKey("$eq") ? document.get("$eq") : null;
            if (isPlainId(value)) {
                return List.of(value);
            }
            if (document.get("$in") instanceof Collection<?> values) {
                Set<Object> ids = new LinkedHashSet<>();
                for (Object id : values) {
                    if (!isPlainId(id)) {
                        return null;
                    }
                    ids.add(id);
                }
                return new ArrayList<>(ids);
            }
        }
        return null;
    }

    private static boolean isPlainId(Object value) {
        return value instanceof String || value instanceof ObjectId;
    }

    /** The plan a query would get, for {@code explain}: the chosen index, or a collection scan. */
    String describePlan(Document query, Document orderBy, int limit) {
        if (idsOf(query.get("_id")) != null) {
            return "IDHACK";
        }
        QueryPlan best = null;
        boolean sortRequested = orderBy != null && !orderBy.isEmpty();
        for (Index<Object> index : getIndexes()) {
            if (index.canHandle(query)) {
                return "UNIQUE " + index.getName();
            }
            if (index instanceof SortedIndex sorted) {
                QueryPlan plan = QueryPlan.of(sorted, query, orderBy, limit);
                if (plan != null && (best == null || plan.score(sortRequested) > best.score(sortRequested))) {
                    best = plan;
                }
            }
        }
        return best == null ? "COLLSCAN" : best.toString();
    }
}
