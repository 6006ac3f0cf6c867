//! Update rules: which releases an instance may move to, which updates are mandatory, and
//! what a valid update window is.
