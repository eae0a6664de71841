//! TODO(issue 2): in progress.
