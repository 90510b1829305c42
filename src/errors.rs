//! What every layer's errors share: printing one with its causes.

/// Formats an error and its chain of sources as one line: `outer: inner: innermost`. A source
/// whose text the line already holds is not said twice (many errors print their source in
/// their own message, and tonic's statuses carry it in theirs).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use std::{error::Error, fmt};

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn every_cause_is_joined_once() {
        let err = Layer(
            "could not open the broker",
            Some(Box::new(Layer(
                "topic orders: permission denied",
                Some(Box::new(Layer("permission denied", None))),
            ))),
        );
        assert_eq!(
            error_chain(&err),
            "could not open the broker: topic orders: permission denied"
        );
        let alone = Layer("disk full", None);
        assert_eq!(error_chain(&alone), "disk full");
    }
}
