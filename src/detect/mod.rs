//! See DESIGN.md: this layer arrives with its issue.
