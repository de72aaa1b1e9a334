fn main() { eprintln!("fjord-operator: not implemented yet; see the operator issue"); std::process::exit(2); }
