package onebox.db;

import java.lang.reflect.Field;
import java.util.List;

import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.bson.Document;

/**
 * An H2 database whose collections plan their queries ({@link OneboxCollection}) and whose non-unique indexes
 * are real ({@link SortedIndex}) instead of being accepted and ignored.
 *
 * <p>Collections live in the same MVStore maps, under the same names, as the library's own H2 backend, so a
 * data file written by either opens with the other. Non-unique indexes are kept in memory and rebuilt from the
 * documents when a database is opened (their descriptions are stored, as before, in system.indexes).
 */
final class OneboxDatabase extends H2Database {

    private static final Field MV_STORE = mvStoreField();

    OneboxDatabase(String databaseName, MVStore mvStore, CursorRegistry cursorRegistry) {
        super(databaseName, mvStore, cursorRegistry);
    }

    private static Field mvStoreField() {
        try {
            Field field = H2Database.class.getDeclaredField("mvStore");
            field.setAccessible(true);
            return field;
        } catch (NoSuchFieldException e) {
            throw new IllegalStateException("mongo-java-server's H2Database changed: no mvStore field", e);
        }
    }

    // Called from H2Database's constructor (before any field of this class is set), hence the store is read from
    // the superclass's field, which that constructor sets first.
    private MVStore store() {
        try {
            return (MVStore) MV_STORE.get(this);
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    protected MongoCollection<Object> openOrCreateCollection(String collectionName, CollectionOptions options) {
        String fullName = getFullCollectionNamespace(collectionName);
        MVMap<Object, Document> dataMap = store().openMap("databases." + fullName);
        MVMap<String, Object> metaMap = store().openMap("meta." + fullName);
        return new OneboxCollection(this, collectionName, options, dataMap, metaMap, cursorRegistry);
    }

    @Override
    protected Index<Object> openOrCreateSecondaryIndex(String collectionName, String indexName, List<IndexKey> keys,
                                                       boolean sparse) {
        return new SortedIndex(indexName, keys, sparse);
    }
}
