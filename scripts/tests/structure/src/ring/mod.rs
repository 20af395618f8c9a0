mod one;
mod three;
mod two;
