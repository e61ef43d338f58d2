// `sqlx::migrate!` embeds the files of `migrations/`, but the compiler does not know that it
// reads them: without this, adding a migration leaves an earlier build without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
