//! Reading an error together with its causes: most libraries' `Display` names
//! only the outermost error ("error connecting to server"), not why.

use std::error::Error;

/// `error`, then each error that caused it, outermost first.
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&current| current.source())
}

/// `error` and its causes as one line: `outer: cause: root cause`.
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    causes(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
