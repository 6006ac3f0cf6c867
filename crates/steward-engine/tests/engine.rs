//! The sqlite engine against real database files in temporary directories.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use steward_core::release::{Catalog, CatalogError, ReleaseVersion};
use steward_engine::{
    EngineError, create_database, database_release, integrity_check, storage_bytes,
    upgrade_database, verify_catalog,
};

fn v(s: &str) -> ReleaseVersion {
    s.parse().unwrap()
}

fn tables(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn columns(path: &Path, table: &str) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .unwrap();
    stmt.query_map([table], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn indexes(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn recorded(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM steward_release ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn has(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == name)
}

/// A file path inside a fresh temporary directory (kept alive by the returned guard).
fn db_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.db");
    (dir, path)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn builtin_catalog_migrations_apply_from_empty() {
    verify_catalog(&Catalog::builtin()).unwrap();
}

#[test]
fn creates_each_release_with_its_schema() {
    let catalog = Catalog::builtin();
    for release in catalog.releases() {
        let (dir, path) = db_path();
        create_database(&path, &catalog, &release.version).unwrap();
        let version = release.version.to_string();

        assert_eq!(
            dir_entries(dir.path()),
            ["tenant.db"],
            "{version}: only the database is left, checkpointed"
        );
        assert_eq!(database_release(&path).unwrap(), release.version);
        integrity_check(&path).unwrap();

        let tables = tables(&path);
        for table in ["accounts", "contacts", "steward_release"] {
            assert!(has(&tables, table), "{version}: {table} in {tables:?}");
        }
        let at_least = |other: &str| release.version >= v(other);
        assert_eq!(has(&tables, "activities"), at_least("8.1"), "{version}");
        assert_eq!(has(&tables, "opportunities"), at_least("8.2"), "{version}");
        assert_eq!(has(&tables, "integrations"), at_least("9.0"), "{version}");

        let contacts = columns(&path, "contacts");
        assert_eq!(has(&contacts, "phone"), at_least("8.2"), "{version}");
        assert_eq!(has(&contacts, "first_name"), at_least("9.0"), "{version}");
        assert_eq!(has(&contacts, "last_name"), at_least("9.0"), "{version}");
        assert_eq!(has(&contacts, "full_name"), !at_least("9.0"), "{version}");
        assert!(has(&contacts, "email"), "{version}");
        assert_eq!(
            has(&columns(&path, "accounts"), "domain"),
            at_least("8.2"),
            "{version}"
        );
        assert_eq!(
            has(&indexes(&path), "contacts_email"),
            at_least("9.1"),
            "{version}"
        );

        // One row per release applied, so history is visible.
        let expected: Vec<String> = catalog
            .migrations_between(None, &release.version)
            .unwrap()
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(recorded(&path), expected);

        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "{version}");
        let applied_at: String = conn
            .query_row(
                "SELECT applied_at FROM steward_release ORDER BY rowid DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(
            applied_at.len() == 24 && applied_at.ends_with('Z'),
            "{applied_at}"
        );
    }
}

#[test]
fn created_database_holds_migrated_sample_data() {
    let catalog = Catalog::builtin();
    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("9.1")).unwrap();
    let conn = Connection::open(&path).unwrap();
    let (first, last, email): (String, String, String) = conn
        .query_row(
            "SELECT first_name, last_name, email FROM contacts WHERE id = 3",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (first.as_str(), last.as_str(), email.as_str()),
        ("Jim", "Glynn van der Berg", "jim.glynn@fabrikam.example")
    );
    let domain: String = conn
        .query_row("SELECT domain FROM accounts WHERE id = 1", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(domain, "contoso.example");
    let enabled: i64 = conn
        .query_row(
            "SELECT count(*) FROM integrations WHERE outgoing = 1 AND enabled = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(enabled, 1);
}

#[test]
fn upgrade_multi_hop_keeps_and_transforms_data() {
    let catalog = Catalog::builtin();
    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("8.1")).unwrap();

    // The application writes rows at 8.1, while in WAL mode, and keeps its connection open.
    let app = Connection::open(&path).unwrap();
    app.execute_batch(
        "INSERT INTO accounts (id, name, website) VALUES (100, 'Tailspin Toys', 'HTTPS://WWW.Tailspin.example:8443/shop');
         INSERT INTO contacts (id, account_id, full_name, email) VALUES
             (100, 100, 'Ada Lovelace', 'Ada.Lovelace@Tailspin.Example'),
             (101, 100, '  Grace   Hopper ', NULL),
             (102, 100, 'Plato', '');
         INSERT INTO activities (account_id, contact_id, kind, subject) VALUES (100, 100, 'call', 'Say hello');",
    )
    .unwrap();
    drop(app);

    let applied = upgrade_database(&path, &catalog, &v("9.1")).unwrap();
    assert_eq!(applied, [v("8.2"), v("9.0"), v("9.1")]);
    assert_eq!(database_release(&path).unwrap(), v("9.1"));
    assert_eq!(recorded(&path), ["8.0", "8.1", "8.2", "9.0", "9.1"]);
    integrity_check(&path).unwrap();

    let conn = Connection::open(&path).unwrap();
    let contact = |id: i64| -> (String, String, Option<String>, Option<String>) {
        conn.query_row(
            "SELECT first_name, last_name, email, phone FROM contacts WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap()
    };
    assert_eq!(
        contact(100),
        (
            "Ada".into(),
            "Lovelace".into(),
            Some("ada.lovelace@tailspin.example".into()),
            None
        )
    );
    assert_eq!(contact(101), ("Grace".into(), "Hopper".into(), None, None));
    assert_eq!(contact(102), ("Plato".into(), "".into(), None, None));
    let domain: String = conn
        .query_row("SELECT domain FROM accounts WHERE id = 100", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(domain, "tailspin.example");
    let activities: i64 = conn
        .query_row(
            "SELECT count(*) FROM activities WHERE contact_id = 100",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(activities, 1);
    // 8.2's and 9.0's new tables are usable.
    conn.execute(
        "INSERT INTO opportunities (account_id, name, amount_cents) VALUES (100, 'Fleet of kites', 120000)",
        [],
    )
    .unwrap();

    // Already there: nothing to do.
    assert!(
        upgrade_database(&path, &catalog, &v("9.1"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn upgrade_refuses_downgrade_and_unknown_release() {
    let catalog = Catalog::builtin();
    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("9.0")).unwrap();
    assert!(matches!(
        upgrade_database(&path, &catalog, &v("8.2")),
        Err(EngineError::Catalog(CatalogError::Downgrade { .. }))
    ));
    assert!(matches!(
        upgrade_database(&path, &catalog, &v("9.5")),
        Err(EngineError::Catalog(CatalogError::UnknownRelease { .. }))
    ));
    assert_eq!(database_release(&path).unwrap(), v("9.0"));
    assert!(matches!(
        upgrade_database(&path.with_file_name("missing.db"), &catalog, &v("9.1")),
        Err(EngineError::NotFound { .. })
    ));
}

/// A catalog in a temporary directory whose 2.0 migration is `bad_sql`.
fn catalog_with_second_migration(bad_sql: &str) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("catalog.toml"),
        r#"
application = "demo"

[[release]]
version = "1.0"
kind = "major"
released = "2020-01-01"
migration = "1.0.sql"

[[release]]
version = "2.0"
kind = "major"
released = "2021-01-01"
migration = "2.0.sql"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("1.0.sql"),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO items (name) VALUES ('first');",
    )
    .unwrap();
    std::fs::write(dir.path().join("2.0.sql"), bad_sql).unwrap();
    let catalog = Catalog::load_dir(dir.path()).unwrap();
    (dir, catalog)
}

const BAD_SQL: &str = "ALTER TABLE items ADD COLUMN price INTEGER;
     UPDATE items SET price = 1;
     INSERT INTO no_such_table VALUES (1);";

#[test]
fn failing_migration_leaves_no_database() {
    let (_catalog_dir, catalog) = catalog_with_second_migration(BAD_SQL);
    assert!(matches!(
        verify_catalog(&catalog),
        Err(EngineError::Migration { version, .. }) if version == v("2.0")
    ));

    let (dir, path) = db_path();
    let err = create_database(&path, &catalog, &v("2.0")).unwrap_err();
    assert!(
        matches!(&err, EngineError::Migration { version, .. } if *version == v("2.0")),
        "{err:?}"
    );
    assert!(err.to_string().contains("release 2.0"), "{err}");
    assert!(!path.exists());
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );

    // The good release can still be created at the same path afterwards.
    create_database(&path, &catalog, &v("1.0")).unwrap();
    assert_eq!(database_release(&path).unwrap(), v("1.0"));
}

#[test]
fn failing_upgrade_rolls_back_that_migration_only() {
    let (_catalog_dir, catalog) = catalog_with_second_migration(BAD_SQL);
    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("1.0")).unwrap();
    let err = upgrade_database(&path, &catalog, &v("2.0")).unwrap_err();
    assert!(matches!(err, EngineError::Migration { .. }), "{err:?}");
    assert_eq!(database_release(&path).unwrap(), v("1.0"));
    assert_eq!(recorded(&path), ["1.0"]);
    // The ALTER TABLE of the failed migration was rolled back with it.
    assert_eq!(columns(&path, "items"), ["id", "name"]);
    integrity_check(&path).unwrap();
}

#[test]
fn create_refuses_an_existing_path() {
    let catalog = Catalog::builtin();
    let (dir, path) = db_path();
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        create_database(&path, &catalog, &v("9.0")),
        Err(EngineError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    assert_eq!(dir_entries(dir.path()), ["tenant.db"]);

    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("8.1")).unwrap();
    assert!(matches!(
        create_database(&path, &catalog, &v("8.1")),
        Err(EngineError::AlreadyExists { .. })
    ));
    assert_eq!(database_release(&path).unwrap(), v("8.1"));
}

#[test]
fn create_refuses_unknown_release_and_busy_temp_file() {
    let catalog = Catalog::builtin();
    let (dir, path) = db_path();
    assert!(matches!(
        create_database(&path, &catalog, &v("7.0")),
        Err(EngineError::Catalog(CatalogError::UnknownRelease { .. }))
    ));
    assert!(dir_entries(dir.path()).is_empty());

    std::fs::write(dir.path().join("tenant.db.creating"), b"").unwrap();
    assert!(matches!(
        create_database(&path, &catalog, &v("9.0")),
        Err(EngineError::CreationInProgress { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn storage_bytes_counts_wal_and_shm() {
    let catalog = Catalog::builtin();
    let (_dir, path) = db_path();
    assert_eq!(storage_bytes(&path), 0);
    create_database(&path, &catalog, &v("9.1")).unwrap();
    let file_only = std::fs::metadata(&path).unwrap().len();
    assert_eq!(storage_bytes(&path), file_only);

    // An application writing without checkpointing grows the WAL, not the file.
    let app = Connection::open(&path).unwrap();
    app.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    app.execute_batch(
        "CREATE TABLE notes (body TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO notes SELECT hex(randomblob(500)) FROM n;",
    )
    .unwrap();
    let wal = std::fs::metadata(path.with_file_name("tenant.db-wal"))
        .unwrap()
        .len();
    let shm = std::fs::metadata(path.with_file_name("tenant.db-shm"))
        .unwrap()
        .len();
    assert!(wal > 100_000, "wal is {wal} bytes");
    assert_eq!(
        storage_bytes(&path),
        std::fs::metadata(&path).unwrap().len() + wal + shm
    );
    drop(app);
}

#[test]
fn inspecting_files_that_are_not_steward_databases() {
    let (dir, path) = db_path();
    assert!(matches!(
        database_release(&path),
        Err(EngineError::NotFound { .. })
    ));
    assert!(!path.exists(), "inspection never creates a file");

    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    assert!(matches!(
        database_release(&path),
        Err(EngineError::NotSteward { .. })
    ));
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE steward_release (version TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
    assert!(matches!(
        database_release(&path),
        Err(EngineError::NoRelease { .. })
    ));
    Connection::open(&path)
        .unwrap()
        .execute_batch("INSERT INTO steward_release VALUES ('nine', 'x')")
        .unwrap();
    assert!(matches!(
        database_release(&path),
        Err(EngineError::BadRecordedRelease { .. })
    ));

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    assert!(matches!(
        database_release(&junk),
        Err(EngineError::NotADatabase { .. })
    ));
    assert!(integrity_check(&junk).is_err());
}

#[test]
fn integrity_check_reports_corruption() {
    let catalog = Catalog::builtin();
    let (_dir, path) = db_path();
    create_database(&path, &catalog, &v("9.1")).unwrap();
    integrity_check(&path).unwrap();

    // Overwrite the middle of a b-tree page (not the header) with garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() >= 4 * page);
    for b in &mut bytes[2 * page + 8..3 * page] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = integrity_check(&path).unwrap_err();
    assert!(matches!(err, EngineError::Corrupt { .. }), "{err:?}");
}
