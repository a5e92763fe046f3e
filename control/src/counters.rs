//! [`counters!`](crate::counters): a struct of `u64` counters declared once, with its names.
//!
//! Every counter a core keeps is a field of such a struct, documented where it is declared;
//! `fields()` lists each one's name and value in declaration order, and that list is what
//! `ctl stats`, the demo and the benchmarks read (no list of names written by hand elsewhere).

/// Declares a struct whose fields are all `u64` counters (written as a plain struct, every
/// field `: u64`), and on it `NAMES` and `fields()`, each counter's name and value in
/// declaration order.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: u64),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: u64,)*
        }

        impl $name {
            /// Every counter's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every counter's name and value, in declaration order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($field), self.$field)),*].into_iter()
            }

            /// Adds `other`'s counts to these (one total from several threads' counters).
            pub fn add(&mut self, other: &Self) {
                $(self.$field = self.$field.saturating_add(other.$field);)*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::counters! {
        #[derive(Default)]
        struct Probe {
            /// A doc comment is kept.
            pub first: u64,
            second: u64,
        }
    }

    #[test]
    fn fields_follow_the_declaration() {
        let p = Probe {
            first: 3,
            second: 5,
        };
        assert_eq!(Probe::NAMES, ["first", "second"]);
        assert_eq!(
            p.fields().collect::<Vec<_>>(),
            [("first", 3), ("second", 5)]
        );
        assert_eq!(Probe::default().second, 0);
        let mut sum = Probe {
            first: 1,
            second: u64::MAX,
        };
        sum.add(&p);
        assert_eq!((sum.first, sum.second), (4, u64::MAX));
    }
}
