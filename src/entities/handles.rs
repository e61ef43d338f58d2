//! Handles held by users (and, later, spaces).

use sqlx::PgConnection;

use crate::error::Error;
use crate::functions::handles::default_candidates;
use crate::functions::ids::UserId;

/// Gives a new user the first free default handle (spec §12.4); `None` when all are taken.
pub async fn assign_default(
    conn: &mut PgConnection,
    user: UserId,
    display_name: &str,
    handle_domain: &str,
) -> Result<Option<String>, Error> {
    for candidate in default_candidates(display_name, user.0, handle_domain) {
        let inserted = sqlx::query("INSERT INTO handles (handle, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&candidate)
            .bind(user)
            .execute(&mut *conn)
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}
