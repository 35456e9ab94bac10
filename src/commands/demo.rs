//! PLACEHOLDER: the demo lands after the HSS client.
pub async fn run() -> Result<(), String> {
    Err("demo not built yet".into())
}
