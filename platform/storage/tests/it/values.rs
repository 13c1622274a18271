use mercato_testkit::TestBackend;

use crate::support::{count, execute, fresh};

mercato_testkit::backend_tests!(text_integers_nulls_and_empty_strings_round_trip);

type Row = (i64, Option<String>, Option<i64>);

async fn text_integers_nulls_and_empty_strings_round_trip(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    execute(&db, "CREATE TABLE vals (id BIGINT PRIMARY KEY, t TEXT, n BIGINT)").await;
    let rows: Vec<Row> = vec![
        (1, Some("plain".into()), Some(0)),
        (2, Some("ünïcødé ✓ and 'quotes'".into()), Some(i64::MAX)),
        (3, Some(String::new()), Some(-42)),
        (4, None, Some(i64::MIN)),
        (5, Some("no number".into()), None),
        (6, None, None),
    ];
    for (id, t, n) in &rows {
        sqlx::query("INSERT INTO vals (id, t, n) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(t.clone())
            .bind(*n)
            .execute(db.pool())
            .await
            .unwrap_or_else(|e| panic!("insert row {id}: {e}"));
    }

    let read: Vec<Row> = sqlx::query_as("SELECT id, t, n FROM vals ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();

    assert_eq!(read, rows);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM vals WHERE t = ''").await,
        1,
        "'' is not NULL"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM vals WHERE t IS NULL").await, 2);
    let max: i64 = sqlx::query_scalar("SELECT n FROM vals WHERE n = $1")
        .bind(i64::MAX)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(max, i64::MAX, "an i64 parameter compares exactly");
    db.close().await;
}
